"""The rowforge gRPC server (``rowforge serve``)."""
