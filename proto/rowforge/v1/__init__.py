"""Generated protobuf and gRPC stubs of the rowforge.v1 API (``make proto``)."""
