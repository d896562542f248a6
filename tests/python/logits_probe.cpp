// The C++ side of tests/python/test_model.py: the logits (B, T, V) of a model folder on the
// inputs of its reference.safetensors, written as raw float32 for a bit-for-bit comparison with
// magix.Model.logits.   logits_probe MODEL_DIR OUT.f32
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "../common/fixture_batch.hpp"
#include "magix/distributed.hpp"
#include "magix/model.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: logits_probe MODEL_DIR OUT.f32\n");
    return 2;
  }
  try {
    const std::filesystem::path dir = argv[1];
    magix::Mesh mesh;
    magix::Decoder model = magix::load_decoder(dir.string(), mesh);
    const magix::SafetensorsReader ref(dir / "reference.safetensors");
    const magix::Tensor logits = model.logits(magix::test::read_fixture_batch(ref));
    std::ofstream out(argv[2], std::ios::binary);
    out.write(reinterpret_cast<const char*>(logits.data<float>()),
              static_cast<std::streamsize>(logits.nbytes()));
    return out.good() ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "logits_probe: %s\n", e.what());
    return 1;
  }
}
