// libFuzzer target over the GGUF reader (src/io/gguf.cpp), its dequantizers and the mapping of
// GGUF metadata to an HF config and tokenizer.json (src/io/gguf_model.cpp). See docs/formats.md
// for how to build and run it. Each input is written to a temporary file and opened; whatever is
// accepted must satisfy what loading relies on: every tensor inside the file, of a supported
// type, rows of whole blocks; reading it gives numel values; the config and tokenizer builders
// either succeed or throw magix::Error.
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "magix/error.hpp"
#include "magix/gguf.hpp"
#include "magix/gguf_model.hpp"

namespace {

std::string g_tmp_path;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fuzz_gguf invariant violated: %s\n", what);
  __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (g_tmp_path.empty()) {
    char tmpl[] = "/tmp/fuzz_gguf_XXXXXX";
    int fd = ::mkstemp(tmpl);
    if (fd < 0) return 0;
    ::close(fd);
    g_tmp_path = tmpl;
  }
  FILE* f = std::fopen(g_tmp_path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    magix::GgufFile g(g_tmp_path);
    for (const auto& t : g.tensors()) {
      if (!magix::ggml_type_supported(static_cast<uint32_t>(t.type))) die("type");
      if (g.data_start() + t.offset + t.nbytes > size) die("tensor out of bounds");
      if (t.dims[0] % magix::ggml_block_values(t.type) != 0) die("partial block");
      if (t.numel() > (1 << 20)) continue;  // bounded time per input
      magix::Tensor v = g.read_f32(t.name);
      if (v.numel() != t.numel()) die("numel");
    }
    try {
      (void)magix::gguf_hf_config(g);
    } catch (const magix::Error&) {
    }
    try {
      (void)magix::gguf_tokenizer_json(g).dump(-1, ' ', false,
                                               nlohmann::json::error_handler_t::replace);
      (void)magix::gguf_tokenizer_config(g);
    } catch (const magix::Error&) {
    }
  } catch (const magix::Error&) {
  }
  return 0;
}
