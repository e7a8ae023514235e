"""An unknown model gets one wording wherever it is named: NOT_FOUND, MODEL_NOT_FOUND, the same
sentence in the message (and in the field violation where there is one)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from rowforge.v1 import batch_job_service_pb2 as bpb
from rowforge.v1 import batch_job_service_pb2_grpc as bgrpc
from rowforge.v1 import common_pb2
from rowforge.v1 import knowledge_service_pb2 as kpb
from rowforge.v1 import knowledge_service_pb2_grpc as kgrpc
from rowforge.v1 import model_service_pb2 as mpb
from rowforge.v1 import model_service_pb2_grpc as mgrpc
from rowforge.v1 import table_service_pb2 as tpb
from rowforge.v1 import table_service_pb2_grpc as tgrpc
from tests.support.server import ServerProcess

SENTENCE = ("model 'nope/x' does not exist on this server; ListModels (rowforge models list) "
            "shows which do")


def _details(err: grpc.RpcError) -> tuple[str, list[str]]:
    status = next(status_pb2.Status.FromString(v) for k, v in err.trailing_metadata()
                  if k == "grpc-status-details-bin")
    reasons, violations = [], []
    for any_ in status.details:
        if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_.Unpack(info)
            reasons.append(info.reason)
        if any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_.Unpack(bad)
            violations += [v.description for v in bad.field_violations]
    assert reasons == ["MODEL_NOT_FOUND"], reasons
    return status.message, violations


def test_every_entry_point_says_the_same(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        models, tables = mgrpc.ModelServiceStub(channel), tgrpc.TableServiceStub(channel)
        tables.CreateTable(tpb.CreateTableRequest(
            table_type=common_pb2.TABLE_TYPE_KNOWLEDGE, table_id="mnf_kb"), timeout=30)
        calls = [
            lambda: models.CreateChatCompletion(mpb.CreateChatCompletionRequest(
                model="nope/x", messages=[mpb.ChatMessage(role="user", content="hi")]),
                timeout=30),
            lambda: models.Embed(mpb.EmbedRequest(model="nope/x", input=["hi"]), timeout=30),
            lambda: tables.CreateTable(tpb.CreateTableRequest(
                table_type=common_pb2.TABLE_TYPE_ACTION, table_id="mnf", cols=[
                    tpb.Column(id="q", dtype="str"),
                    tpb.Column(id="a", dtype="str", gen_config=tpb.GenConfig(
                        llm=tpb.LLMGenConfig(model="nope/x", prompt="${q}")))]), timeout=30),
            lambda: kgrpc.KnowledgeServiceStub(channel).HybridSearch(kpb.HybridSearchRequest(
                table_id="mnf_kb", query="q", reranking_model="nope/x"), timeout=30),
            lambda: bgrpc.BatchJobServiceStub(channel).CreateJob(
                bpb.CreateJobRequest(model="nope/x"), timeout=30),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            message, violations = _details(info.value)
            assert message.endswith(SENTENCE), message
            assert all(v == SENTENCE for v in violations), violations
