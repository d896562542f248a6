// Transient stubs: the implementation follows.
#include "magix/hf_files.hpp"

#include "magix/error.hpp"

namespace magix {

std::filesystem::path resolve_model_dir(const std::string&) { MAGIX_FAIL("not yet"); }
HfWeights::HfWeights(const std::filesystem::path& model_dir) : dir_(model_dir) {
  MAGIX_FAIL("not yet");
}
HfWeights::~HfWeights() = default;
HfWeights::HfWeights(HfWeights&&) noexcept = default;
HfWeights& HfWeights::operator=(HfWeights&&) noexcept = default;
std::vector<std::string> HfWeights::names() const { return {}; }
bool HfWeights::contains(std::string_view) const { return false; }
const SafetensorsEntry& HfWeights::entry(std::string_view) const { MAGIX_FAIL("not yet"); }
Tensor HfWeights::read(std::string_view) const { MAGIX_FAIL("not yet"); }
Tensor HfWeights::read_f32(std::string_view) const { MAGIX_FAIL("not yet"); }
Tensor HfWeights::read_box_f32(std::string_view, const Shape&, const Shape&) const {
  MAGIX_FAIL("not yet");
}
const SafetensorsReader& HfWeights::reader_of(std::string_view) const { MAGIX_FAIL("not yet"); }
void write_hf_weights(const std::filesystem::path&, std::span<const NamedTensor>, DType, uint64_t) {
  MAGIX_FAIL("not yet");
}

}  // namespace magix
