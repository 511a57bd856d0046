"""Generated gRPC code for the public API, cloaca.sandbox.v1.Supervisor (see protos/)."""
