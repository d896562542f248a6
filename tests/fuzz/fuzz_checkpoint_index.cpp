// libFuzzer target over the checkpoint index parser (ckpt::parse_index: index.json of a step)
// and the per-rank shard manifests (ckpt::shard_list_from_json: .shards-rank-R.json). See
// docs/formats.md for how to build and run it. Each input is parsed as both; whatever is
// accepted must satisfy what the reader relies on: every extra file listed in "files", every
// shard path relative and inside the step, every shard box inside its tensor with nbytes =
// numel(extent) x dtype size, and the shards of a tensor covering exactly its elements.
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "io/checkpoint_format.hpp"
#include "io/safetensors_util.hpp"
#include "magix/error.hpp"

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fuzz_checkpoint_index invariant violated: %s\n", what);
  __builtin_trap();
}

void check_index(const magix::ckpt::StepIndex& index) {
  for (const std::string& name : index.extra_files) {
    if (index.files.count(name) == 0) die("extra file not in files");
  }
  for (const auto& [name, unused] : index.files) {
    if (name.empty() || name.find('/') != std::string::npos || name == "..") die("file name");
  }
  for (const auto& [item, tensors] : index.items) {
    for (const auto& [name, t] : tensors) {
      const int64_t numel = magix::shape_numel(t.shape);
      int64_t covered = 0;
      for (const magix::ckpt::ShardRecord& s : t.shards) {
        if (s.file.empty() || s.file[0] == '/' || s.file.find("..") != std::string::npos) {
          die("shard path escapes the step");
        }
        if (s.start.size() != t.shape.size() || s.extent.size() != t.shape.size()) die("dims");
        for (size_t d = 0; d < t.shape.size(); ++d) {
          if (s.start[d] < 0 || s.extent[d] < 0 || s.start[d] > t.shape[d] ||
              s.extent[d] > t.shape[d] - s.start[d]) {
            die("shard box outside the tensor");
          }
        }
        const int64_t n = magix::shape_numel(s.extent);
        if (s.nbytes != static_cast<uint64_t>(n) * magix::dtype_size(t.dtype)) die("nbytes");
        covered += n;
      }
      if (covered != numel) die("coverage");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    check_index(magix::ckpt::parse_index(text));
  } catch (const magix::Error&) {
    // rejected: fine
  }
  try {
    magix::ckpt::shard_list_from_json(magix::io::parse_json_strict(text, 64));
  } catch (const magix::Error&) {
  }
  return 0;
}
