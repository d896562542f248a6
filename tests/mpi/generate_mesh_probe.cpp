// Generation on a D x M mesh (run under mpirun): every data rank generates its share of the
// fixture prompts (prompt i on data rank i % D) with the model split over M ranks, and checks
//   greedy   == transformers' greedy ids (tests/fixtures/generation/CASE.json), and
//   sampled  == the same process's own 1x1 run (mesh- and batch-independent sampling).
// Usage: generate_mesh_probe CASE D M. Prints one line per check; exit status 1 if any fails.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "magix/distributed.hpp"
#include "magix/error.hpp"
#include "magix/generate.hpp"
#include "magix/model.hpp"

namespace {

namespace fs = std::filesystem;
using Ids = std::vector<std::vector<int32_t>>;

Ids tokens_of(const std::vector<magix::GenerationResult>& results) {
  Ids out;
  for (const auto& r : results) out.push_back(r.tokens);
  return out;
}

int run(const std::string& name, int d, int m) {
  const fs::path fix(MAGIX_FIXTURES_DIR);
  std::ifstream in(fix / "generation" / (name + ".json"));
  MAGIX_CHECK(in.good(), "no generation fixture for {}", name);
  const nlohmann::json j = nlohmann::json::parse(in);
  const Ids prompts = j.at("prompts").get<Ids>(), greedy = j.at("greedy").get<Ids>();
  magix::GenerateOptions o;
  o.max_new_tokens = j.at("max_new_tokens").get<int64_t>();
  o.eos_ids = {j.at("eos_token_id").get<int32_t>()};
  o.pad_id = j.at("pad_token_id").get<int32_t>();

  const std::string model_dir = (fix / "models" / name).string();
  magix::Mesh mesh = magix::create_device_mesh({d, m});
  magix::Generator gen(magix::load_decoder(model_dir, mesh));
  // This data rank's prompts: i % D == data rank.
  Ids mine, want;
  std::vector<int64_t> index;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (static_cast<int>(i % mesh.data_size()) != mesh.data_rank()) continue;
    mine.push_back(prompts[i]);
    want.push_back(greedy[i]);
    index.push_back(static_cast<int64_t>(i));
  }
  int failures = 0;
  auto report = [&](const char* what, bool ok) {
    std::printf("rank %d %s %dx%d %s: %s\n", mesh.world_rank(), name.c_str(), d, m, what,
                ok ? "ok" : "FAIL");
    failures += !ok;
  };
  report("greedy == transformers", tokens_of(gen.generate(mine, o, index)) == want);

  o.sampling.sample = true;
  o.sampling.temperature = 1.2f;
  o.sampling.top_k = 40;
  o.sampling.top_p = 0.9f;
  o.sampling.seed = 11;
  const Ids sampled = tokens_of(gen.generate(mine, o, index));
  magix::Mesh local;
  magix::Generator one(magix::load_decoder(model_dir, local));
  report(
      "sampled == 1x1 (all prompts in one batch)", sampled == [&] {
        const Ids all = tokens_of(one.generate(prompts, o));
        Ids out;
        for (int64_t i : index) out.push_back(all[static_cast<size_t>(i)]);
        return out;
      }());
  double f = failures;
  mesh.world().all_reduce(std::span<double>(&f, 1), magix::ReduceOp::kSum);
  return f > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  magix::Runtime runtime(&argc, &argv);
  try {
    if (argc == 4) return run(argv[1], std::atoi(argv[2]), std::atoi(argv[3]));
    std::fprintf(stderr, "usage: generate_mesh_probe CASE D M\n");
    return 2;
  } catch (const magix::Error& e) {
    runtime.abort(e.what());
  }
}
