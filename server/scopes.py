"""What each RPC needs of a token: the one place where the scope of every RPC is declared.

Scopes are ordered: ``read`` < ``write`` < ``admin``. A ``read`` token may call what changes
no stored state (gets, lists, searches, downloads, and model calls, which store nothing); a
``write`` token may call everything in ``rowforge.v1``; ``admin`` is ``write`` plus what is
reserved for operators. A method missing here needs ``admin`` (deny by default), and a test
walks every RPC of the protos so that a new one cannot be forgotten.
"""

from __future__ import annotations

SCOPES = ("read", "write", "admin")
RANK = {name: i for i, name in enumerate(SCOPES)}

_READ = "read"
_WRITE = "write"

#: Every rowforge.v1 method and the scope it needs.
METHOD_SCOPES: dict[str, str] = {
    "/rowforge.v1.ModelService/ListModels": _READ,
    "/rowforge.v1.ModelService/ChatCompletion": _READ,
    "/rowforge.v1.ModelService/CreateChatCompletion": _READ,
    "/rowforge.v1.ModelService/Embed": _READ,
    "/rowforge.v1.ModelService/Rerank": _READ,
    "/rowforge.v1.TableService/CreateTable": _WRITE,
    "/rowforge.v1.TableService/GetTable": _READ,
    "/rowforge.v1.TableService/ListTables": _READ,
    "/rowforge.v1.TableService/DeleteTable": _WRITE,
    "/rowforge.v1.TableService/DuplicateTable": _WRITE,
    "/rowforge.v1.TableService/RenameTable": _WRITE,
    "/rowforge.v1.TableService/AddColumns": _WRITE,
    "/rowforge.v1.TableService/DropColumns": _WRITE,
    "/rowforge.v1.TableService/RenameColumns": _WRITE,
    "/rowforge.v1.TableService/ReorderColumns": _WRITE,
    "/rowforge.v1.TableService/UpdateGenConfig": _WRITE,
    "/rowforge.v1.TableService/AddRows": _WRITE,
    "/rowforge.v1.TableService/StreamAddRows": _WRITE,
    "/rowforge.v1.TableService/ListRows": _READ,
    "/rowforge.v1.TableService/GetRow": _READ,
    "/rowforge.v1.TableService/UpdateRows": _WRITE,
    "/rowforge.v1.TableService/DeleteRows": _WRITE,
    "/rowforge.v1.TableService/RegenRows": _WRITE,
    "/rowforge.v1.TableService/StreamRegenRows": _WRITE,
    "/rowforge.v1.TableService/ImportRows": _WRITE,
    "/rowforge.v1.TableService/ExportRows": _READ,
    "/rowforge.v1.TableService/CreateTableJob": _WRITE,
    "/rowforge.v1.KnowledgeService/EmbedFile": _WRITE,
    "/rowforge.v1.KnowledgeService/EmbedFileContent": _WRITE,
    "/rowforge.v1.KnowledgeService/HybridSearch": _READ,
    "/rowforge.v1.FileService/UploadFile": _WRITE,
    "/rowforge.v1.FileService/GetFile": _READ,
    "/rowforge.v1.FileService/ListFiles": _READ,
    "/rowforge.v1.FileService/DeleteFile": _WRITE,
    "/rowforge.v1.FileService/DownloadFile": _READ,
    "/rowforge.v1.FileService/GetThumbnail": _READ,
    "/rowforge.v1.BatchJobService/CreateJob": _WRITE,
    "/rowforge.v1.BatchJobService/AddRequests": _WRITE,
    "/rowforge.v1.BatchJobService/StreamAddRequests": _WRITE,
    "/rowforge.v1.BatchJobService/SubmitJob": _WRITE,
    "/rowforge.v1.BatchJobService/GetJob": _READ,
    "/rowforge.v1.BatchJobService/ListJobs": _READ,
    "/rowforge.v1.BatchJobService/CancelJob": _WRITE,
    "/rowforge.v1.BatchJobService/GetRequest": _READ,
    "/rowforge.v1.BatchJobService/StreamResults": _READ,
    "/rowforge.v1.BatchJobService/WatchJob": _READ,
}


def required_scope(method: str) -> str:
    """The scope ``method`` (``/package.Service/Method``) needs; ``admin`` when undeclared."""
    return METHOD_SCOPES.get(method, "admin")


def allows(scope: str, method: str) -> bool:
    """Whether a token of ``scope`` may call ``method``."""
    return RANK.get(scope, -1) >= RANK[required_scope(method)]
