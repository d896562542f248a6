// libFuzzer target over the safetensors parser and reader. See docs/formats.md for how to build
// and run it. Each input is tried twice:
//   1. as a whole file (8-byte header length, header, data);
//   2. as "one byte k, header text, then the last k % 64 bytes as data", with the length field
//      computed, so that mutations reach the JSON checks instead of failing the length check.
// An accepted file is also written to a temporary file and read back through SafetensorsReader:
// every tensor must come back with exactly the bytes at its offset, and boxes must match.
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "magix/error.hpp"
#include "magix/safetensors.hpp"

namespace {

std::string g_tmp_path;  // one temporary file per fuzzing process

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors invariant violated: %s\n", what);
  __builtin_trap();
}

void check_reader(const std::string& file, const magix::SafetensorsHeader& h) {
  FILE* f = std::fopen(g_tmp_path.c_str(), "wb");
  if (f == nullptr) return;
  std::fwrite(file.data(), 1, file.size(), f);
  std::fclose(f);
  magix::SafetensorsReader r(g_tmp_path);  // must accept what the parser accepted
  if (r.entries().size() != h.entries.size() || r.data_start() != h.data_start) die("reader");
  for (const auto& e : r.entries()) {
    if (h.data_start + e.offset + e.nbytes > file.size()) die("entry out of bounds");
    magix::Tensor t = r.read(e.name);
    if (t.nbytes() != e.nbytes) die("nbytes");
    if (e.nbytes && std::memcmp(t.bytes(), file.data() + h.data_start + e.offset, e.nbytes)) {
      die("bytes differ");
    }
    bool is_float = e.dtype == magix::DType::kF32 || e.dtype == magix::DType::kBF16 ||
                    e.dtype == magix::DType::kF16;
    if (!is_float) continue;
    magix::Tensor full = r.read_f32(e.name);
    // The box of the upper half of every dim must equal the same elements of the full tensor.
    magix::Shape start, extent;
    for (int64_t d : e.shape) {
      start.push_back(d / 2);
      extent.push_back(d - d / 2);
    }
    magix::Tensor box = r.read_box_f32(e.name, start, extent);
    if (box.numel() > 0) {
      // Last element of the box is the last element of the tensor.
      float a = box.span<float>()[box.numel() - 1], b = full.span<float>()[full.numel() - 1];
      if (std::memcmp(&a, &b, sizeof a) != 0) die("box last element");
    }
  }
}

void try_file(const std::string& file) {
  auto bytes = std::as_bytes(std::span(file.data(), file.size()));
  magix::SafetensorsHeader h;
  try {
    h = magix::parse_safetensors_header(bytes, file.size());
  } catch (const magix::Error&) {
    return;
  }
  // Invariants of an accepted header.
  uint64_t pos = 0;
  for (const auto& e : h.entries) {
    if (e.offset != pos) die("entries do not tile");
    pos += e.nbytes;
  }
  if (h.data_start + pos != file.size()) die("data section size");
  try {
    check_reader(file, h);
  } catch (const magix::Error& e) {
    std::fprintf(stderr, "reader rejected a parsed file: %s\n", e.what());
    die("reader disagrees with parser");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/fuzz_safetensors_XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) return 1;
  ::close(fd);
  g_tmp_path = tmpl;
  std::atexit([] { ::unlink(g_tmp_path.c_str()); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  try_file(input);
  if (size >= 1) {
    size_t k = std::min<size_t>(static_cast<uint8_t>(input[0]) % 64, size - 1);
    std::string header = input.substr(1, size - 1 - k);
    std::string file(8, '\0');
    for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    file += header;
    file += input.substr(size - k);
    try_file(file);
  }
  return 0;
}
