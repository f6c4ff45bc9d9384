// gRPC Server Reflection v1 (grpc.reflection.v1.ServerReflection) over the
// process's generated descriptor pool, beside grpc++'s own v1alpha plugin.
// Clients (grpcurl, Postman, grpcui) try v1 first.
//
// list_services answers the names given at construction (the services the
// server registers; the coordinator passes its own, grpc.health.v1.Health
// and both reflection services). file_by_filename, file_containing_symbol
// and file_containing_extension answer the file and, once per stream, each
// of its transitive dependencies; all_extension_numbers_of_type the
// extension numbers. A name the pool does not know is an error_response
// with NOT_FOUND (the stream goes on). A service is resolvable only if its
// generated code is linked (grpc.health.v1: latentkv_health_proto).
//
// Why our own: Debian's grpc++_reflection (1.51) serves v1alpha only.
// Thread-safety: each stream is served on its own call; the pool is
// immutable.
#ifndef LATENTKV_COMMON_REFLECTION_REFLECTION_V1_H_
#define LATENTKV_COMMON_REFLECTION_REFLECTION_V1_H_

#include <string>
#include <vector>

#include "grpc/reflection/v1/reflection.grpc.pb.h"

namespace latentkv {

class ReflectionV1Service final
    : public grpc::reflection::v1::ServerReflection::Service {
 public:
  explicit ReflectionV1Service(std::vector<std::string> services);

  grpc::Status ServerReflectionInfo(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<grpc::reflection::v1::ServerReflectionResponse,
                               grpc::reflection::v1::ServerReflectionRequest>*
          stream) override;

  // The response to one request; `sent` holds the files already sent on
  // the stream (updated). Exposed for tests.
  grpc::reflection::v1::ServerReflectionResponse Answer(
      const grpc::reflection::v1::ServerReflectionRequest& req,
      std::vector<std::string>* sent) const;

 private:
  std::vector<std::string> services_;
};

}  // namespace latentkv

#endif  // LATENTKV_COMMON_REFLECTION_REFLECTION_V1_H_
