#include "common/reflection/reflection_v1.h"

#include <algorithm>
#include <utility>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"

namespace latentkv {
namespace {

namespace rv1 = ::grpc::reflection::v1;
using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;

// Adds `file` and its transitive dependencies not in `sent`, the file
// first (what grpc's own reflection sends).
void AddFiles(const FileDescriptor* file, std::vector<std::string>* sent,
              rv1::FileDescriptorResponse* out) {
  std::vector<const FileDescriptor*> todo = {file};
  while (!todo.empty()) {
    const FileDescriptor* f = todo.back();
    todo.pop_back();
    if (std::find(sent->begin(), sent->end(), f->name()) != sent->end()) {
      continue;
    }
    sent->push_back(f->name());
    google::protobuf::FileDescriptorProto proto;
    f->CopyTo(&proto);
    proto.SerializeToString(out->add_file_descriptor_proto());
    for (int i = f->dependency_count() - 1; i >= 0; --i) {
      todo.push_back(f->dependency(i));
    }
  }
}

void NotFound(const std::string& what, rv1::ServerReflectionResponse* r) {
  rv1::ErrorResponse* e = r->mutable_error_response();
  e->set_error_code(static_cast<int32_t>(grpc::StatusCode::NOT_FOUND));
  e->set_error_message(what + " not found");
}

}  // namespace

ReflectionV1Service::ReflectionV1Service(std::vector<std::string> services)
    : services_(std::move(services)) {
  std::sort(services_.begin(), services_.end());
}

rv1::ServerReflectionResponse ReflectionV1Service::Answer(
    const rv1::ServerReflectionRequest& req,
    std::vector<std::string>* sent) const {
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  rv1::ServerReflectionResponse r;
  r.set_valid_host(req.host());
  *r.mutable_original_request() = req;
  switch (req.message_request_case()) {
    case rv1::ServerReflectionRequest::kListServices:
      for (const std::string& s : services_) {
        r.mutable_list_services_response()->add_service()->set_name(s);
      }
      break;
    case rv1::ServerReflectionRequest::kFileByFilename:
      if (const FileDescriptor* f =
              pool->FindFileByName(req.file_by_filename())) {
        AddFiles(f, sent, r.mutable_file_descriptor_response());
      } else {
        NotFound("file " + req.file_by_filename(), &r);
      }
      break;
    case rv1::ServerReflectionRequest::kFileContainingSymbol:
      if (const FileDescriptor* f =
              pool->FindFileContainingSymbol(req.file_containing_symbol())) {
        AddFiles(f, sent, r.mutable_file_descriptor_response());
      } else {
        NotFound("symbol " + req.file_containing_symbol(), &r);
      }
      break;
    case rv1::ServerReflectionRequest::kFileContainingExtension: {
      const rv1::ExtensionRequest& x = req.file_containing_extension();
      const auto* type = pool->FindMessageTypeByName(x.containing_type());
      const auto* ext = type == nullptr ? nullptr
                                        : pool->FindExtensionByNumber(
                                              type, x.extension_number());
      if (ext != nullptr) {
        AddFiles(ext->file(), sent, r.mutable_file_descriptor_response());
      } else {
        NotFound("extension " + x.containing_type(), &r);
      }
      break;
    }
    case rv1::ServerReflectionRequest::kAllExtensionNumbersOfType: {
      const auto* type =
          pool->FindMessageTypeByName(req.all_extension_numbers_of_type());
      if (type == nullptr) {
        NotFound("type " + req.all_extension_numbers_of_type(), &r);
        break;
      }
      std::vector<const google::protobuf::FieldDescriptor*> exts;
      pool->FindAllExtensions(type, &exts);
      rv1::ExtensionNumberResponse* n =
          r.mutable_all_extension_numbers_response();
      n->set_base_type_name(type->full_name());
      for (const auto* e : exts) n->add_extension_number(e->number());
      break;
    }
    default: {
      rv1::ErrorResponse* e = r.mutable_error_response();
      e->set_error_code(static_cast<int32_t>(grpc::StatusCode::UNIMPLEMENTED));
      e->set_error_message("unknown reflection request");
    }
  }
  return r;
}

grpc::Status ReflectionV1Service::ServerReflectionInfo(
    grpc::ServerContext*,
    grpc::ServerReaderWriter<rv1::ServerReflectionResponse,
                             rv1::ServerReflectionRequest>* stream) {
  std::vector<std::string> sent;
  rv1::ServerReflectionRequest req;
  while (stream->Read(&req)) {
    if (!stream->Write(Answer(req, &sent))) break;
  }
  return grpc::Status::OK;
}

}  // namespace latentkv
