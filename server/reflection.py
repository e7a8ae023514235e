"""Server reflection, v1 and v1alpha.

grpcio-reflection serves only ``grpc.reflection.v1alpha.ServerReflection`` (grpc/grpc#38576);
current grpcurl and ``buf curl`` ask for ``grpc.reflection.v1.ServerReflection`` first. The v1
protocol is v1alpha's under another package name (same messages, same field numbers), so v1 is
served by the same servicer: its method is registered under the v1 name, with v1alpha's
message classes doing the (identical) wire encoding, and the v1 file descriptor (v1alpha's,
renamed) is added to the pool so that v1 itself can be described.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
_V1_METHOD = "ServerReflectionInfo"


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """v1alpha's reflection.proto renamed to v1, added to ``pool`` once."""
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    old = proto.package
    proto.name, proto.package = V1_FILE, "grpc.reflection.v1"
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(f".{old}."):
                field.type_name = field.type_name.replace(f".{old}.", ".grpc.reflection.v1.", 1)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{old}.", ".grpc.reflection.v1.", 1)
            method.output_type = method.output_type.replace(f".{old}.", ".grpc.reflection.v1.",
                                                            1)
    pool.Add(proto)


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection (v1 and v1alpha) listing ``service_names`` and both reflection
    services."""
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME]
    pool = descriptor_pool.Default()
    _add_v1_descriptor(pool)
    servicer = reflection.aio.ReflectionServicer(names, pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME, {_V1_METHOD: handler}),))
