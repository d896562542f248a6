// The LoRA fixtures of tools/reference/make_lora_fixtures.py (tests/fixtures/lora/<case>/):
// the case's config, its batch (the model fixture's) and the adapters as PEFT had them. Shared
// by tests/lora and the mesh probe tests/mpi/lora_probe.cpp (no GoogleTest dependency).
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "../common/fixture_batch.hpp"
#include "../common/shard_pieces.hpp"
#include "magix/error.hpp"
#include "magix/lora.hpp"
#include "magix/model.hpp"
#include "magix/safetensors.hpp"

namespace magix::test {

inline const std::filesystem::path kLoraFixtures =
    std::filesystem::path(MAGIX_FIXTURES_DIR) / "lora";
inline const std::filesystem::path kModelFixtures =
    std::filesystem::path(MAGIX_FIXTURES_DIR) / "models";

struct LoraFixture {
  std::filesystem::path model_dir;  // the base model (an HF folder)
  LoraConfig config;
  SafetensorsReader reader;  // lora.safetensors
  TokenBatch batch;          // the whole batch of the model fixture
  double token_count = 0;
};

inline LoraFixture load_lora_fixture(const std::string& name, int64_t repeat = 1) {
  const std::filesystem::path dir = kLoraFixtures / name;
  std::ifstream f(dir / "lora.json");
  MAGIX_CHECK(f.good(), "cannot read {}", (dir / "lora.json").string());
  const nlohmann::json meta = nlohmann::json::parse(f);
  LoraFixture fx{kModelFixtures / meta.at("model").get<std::string>(), LoraConfig{},
                 SafetensorsReader(dir / "lora.safetensors"), TokenBatch{}, 0};
  fx.config.rank = meta.at("r").get<int64_t>();
  fx.config.alpha = meta.at("lora_alpha").get<double>();
  fx.config.rslora = meta.value("use_rslora", false);
  if (!meta.at("magix_targets").is_null()) {
    fx.config.targets = meta.at("magix_targets").get<std::string>();
  }
  SafetensorsReader ref(fx.model_dir / "reference.safetensors");
  fx.batch = test::read_fixture_batch(ref, repeat);
  fx.token_count = static_cast<double>(fx.batch.count_targets());
  return fx;
}

// The fixture's adapter values on the boxes of `infos` (lora_adapter_infos' layout).
inline ParameterSet fixture_adapters(const LoraFixture& fx, const std::vector<ParamInfo>& infos) {
  ParameterSet out(infos);
  for (size_t i = 0; i < out.size(); ++i) {
    const ParamInfo& p = out.info(i);
    out.tensor(i) = read_local_f32(fx.reader, "adapter." + p.name, p);
  }
  return out;
}

}  // namespace magix::test
