// gRPC Server Reflection v1 on the coordinator's public port, as grpcurl
// uses it: list the services, then resolve each (health included) to its
// file descriptors, which must describe the methods clients call.
#include <set>
#include <string>
#include <vector>

#include "google/protobuf/descriptor.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster.h"
#include "tests/integration/process.h"

namespace latentkv::testing {
namespace {

namespace rv1 = ::grpc::reflection::v1;

using ReflectionTest = SharedClusterTest;

// The services a file defines, "package.Service/Method" each.
std::set<std::string> Methods(const std::string& serialized) {
  google::protobuf::FileDescriptorProto f;
  EXPECT_TRUE(f.ParseFromString(serialized));
  std::set<std::string> out;
  for (const auto& s : f.service()) {
    for (const auto& m : s.method()) {
      out.insert(f.package() + "." + s.name() + "/" + m.name());
    }
  }
  return out;
}

TEST_F(ReflectionTest, V1ListsAndResolvesEveryService) {
  auto stub = rv1::ServerReflection::NewStub(grpc::CreateChannel(
      cluster_->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  auto stream = stub->ServerReflectionInfo(&ctx);
  auto ask = [&](rv1::ServerReflectionRequest req) {
    rv1::ServerReflectionResponse resp;
    EXPECT_TRUE(stream->Write(req));
    EXPECT_TRUE(stream->Read(&resp));
    return resp;
  };
  rv1::ServerReflectionRequest list;
  list.set_list_services("");
  const rv1::ServerReflectionResponse listed = ask(list);
  std::set<std::string> services;
  for (const auto& s : listed.list_services_response().service()) {
    services.insert(s.name());
  }
  EXPECT_EQ(services,
            (std::set<std::string>{"grpc.health.v1.Health",
                                   "grpc.reflection.v1.ServerReflection",
                                   "grpc.reflection.v1alpha.ServerReflection",
                                   "latentkv.v1.Generation"}));
  // Each resolves to the file that defines it (its dependencies after).
  const std::vector<std::pair<std::string, std::string>> expect = {
      {"grpc.health.v1.Health", "grpc.health.v1.Health/Check"},
      {"latentkv.v1.Generation", "latentkv.v1.Generation/Generate"},
      {"grpc.reflection.v1.ServerReflection",
       "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}};
  for (const auto& [service, method] : expect) {
    rv1::ServerReflectionRequest req;
    req.set_file_containing_symbol(service);
    const rv1::ServerReflectionResponse r = ask(req);
    ASSERT_TRUE(r.has_file_descriptor_response()) << service;
    ASSERT_GT(r.file_descriptor_response().file_descriptor_proto_size(), 0);
    EXPECT_TRUE(Methods(r.file_descriptor_response().file_descriptor_proto(0))
                    .contains(method))
        << service;
  }
  // A message type resolves too; an unknown name is NOT_FOUND and the
  // stream goes on.
  rv1::ServerReflectionRequest msg;
  msg.set_file_containing_symbol("latentkv.v1.SamplingParams");
  EXPECT_TRUE(ask(msg).has_file_descriptor_response());
  rv1::ServerReflectionRequest unknown;
  unknown.set_file_containing_symbol("no.such.Service");
  const rv1::ServerReflectionResponse nf = ask(unknown);
  EXPECT_EQ(nf.error_response().error_code(), grpc::StatusCode::NOT_FOUND);
  rv1::ServerReflectionRequest by_name;
  by_name.set_file_by_filename("grpc/health/v1/health.proto");
  const rv1::ServerReflectionResponse again = ask(by_name);
  // Already sent on this stream: nothing to add.
  EXPECT_TRUE(again.has_file_descriptor_response());
  EXPECT_EQ(again.file_descriptor_response().file_descriptor_proto_size(), 0);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace latentkv::testing
