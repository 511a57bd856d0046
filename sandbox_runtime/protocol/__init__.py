"""Generated gRPC code for the supervisor <-> sandbox protocol (see protos/)."""
