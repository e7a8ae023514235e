"""Reading rich gRPC error details in tests."""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

M = TypeVar("M", bound=Message)


def details(err: grpc.RpcError) -> tuple[str, dict[str, str], dict[str, str]]:
    """(ErrorInfo reason, its metadata, {violation field: description})."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, f"no rich status: {err}"
    reason, meta, fields = "", {}, {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, meta = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.update({v.field: v.description for v in bad.field_violations})
    return reason, meta, fields


def detail_of(err: grpc.RpcError, cls: type[M]) -> M | None:
    """The first detail of type ``cls`` (e.g. ``error_details_pb2.RetryInfo``), or None."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, f"no rich status: {err}"
    return unpack(status, cls)


def unpack(status: Any, cls: type[M]) -> M | None:
    """The first detail of type ``cls`` in a ``google.rpc.Status``, or None."""
    for detail in status.details:
        if detail.Is(cls.DESCRIPTOR):
            out = cls()
            detail.Unpack(out)
            return out
    return None


async def fails(call: Any, code: grpc.StatusCode) -> tuple[str, dict[str, str], dict[str, str]]:
    """Await a unary call or drain a stream (or a zero-argument callable returning either);
    assert it fails with ``code``; return its :func:`details`."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if callable(call) and not hasattr(call, "__aiter__") and not hasattr(call, "__await__"):
            call = call()
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    assert err.value.code() == code, err.value.details()
    return details(err.value)


def violated_fields(err: grpc.RpcError) -> tuple[str, dict[str, str], list[str]]:
    """:func:`details` with the violated fields as a list, in the server's order."""
    reason, meta, fields = details(err)
    return reason, meta, list(fields)


async def fails_on_fields(call: Any, code: grpc.StatusCode
                          ) -> tuple[str, dict[str, str], list[str]]:
    """:func:`fails` with the violated fields as a list, in the server's order."""
    reason, meta, fields = await fails(call, code)
    return reason, meta, list(fields)
