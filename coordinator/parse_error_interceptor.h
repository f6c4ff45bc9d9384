// A server interceptor that gives requests gRPC could not deserialize a
// clear status. gRPC answers a message that does not parse (truncated
// bytes, a wrong wire type, or a proto3 string field holding invalid
// UTF-8: protobuf refuses those) with INTERNAL and an empty message, which
// reads as a server fault. Every handler of ours that fails names its
// error, so an INTERNAL with an empty message can only be that: it becomes
// INVALID_ARGUMENT naming the method and the likely cause.
// Thread-safety: the factory is thread-safe; each interceptor serves one
// call.
#ifndef LATENTKV_COORDINATOR_PARSE_ERROR_INTERCEPTOR_H_
#define LATENTKV_COORDINATOR_PARSE_ERROR_INTERCEPTOR_H_

#include <memory>

#include "grpcpp/support/server_interceptor.h"

namespace latentkv::coordinator {

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewParseErrorInterceptorFactory();

}  // namespace latentkv::coordinator

#endif  // LATENTKV_COORDINATOR_PARSE_ERROR_INTERCEPTOR_H_
