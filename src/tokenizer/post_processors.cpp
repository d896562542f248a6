#include "tokenizer/post_processors.hpp"

#include <algorithm>

#include "magix/error.hpp"
#include "tokenizer/unicode.hpp"

namespace magix::text {
namespace {

using nlohmann::json;

class SequenceProcessor final : public PostProcessor {
 public:
  std::vector<std::unique_ptr<PostProcessor>> parts;
  void process(EncodingBuffer& enc, bool add, const IdToToken& f) const override {
    for (const auto& p : parts) p->process(enc, add, f);
  }
  void special_ids(std::vector<int32_t>& out) const override {
    for (const auto& p : parts) p->special_ids(out);
  }
};

// Single-sequence template: special tokens around the sequence "A".
class TemplateProcessor final : public PostProcessor {
 public:
  struct Item {
    bool is_sequence;
    std::vector<int32_t> ids;  // the special token's ids
  };
  std::vector<Item> single;
  void process(EncodingBuffer& enc, bool add, const IdToToken&) const override {
    if (!add) return;
    EncodingBuffer out;
    out.with_offsets = enc.with_offsets;
    for (const Item& it : single) {
      if (it.is_sequence) {
        out.ids.insert(out.ids.end(), enc.ids.begin(), enc.ids.end());
        out.offsets.insert(out.offsets.end(), enc.offsets.begin(), enc.offsets.end());
        out.from_input.insert(out.from_input.end(), enc.from_input.begin(), enc.from_input.end());
      } else {
        out.ids.insert(out.ids.end(), it.ids.begin(), it.ids.end());
        if (!out.with_offsets) continue;
        out.offsets.insert(out.offsets.end(), it.ids.size(), Range{0, 0});
        out.from_input.insert(out.from_input.end(), it.ids.size(), 0);
      }
    }
    enc = std::move(out);
  }
  void special_ids(std::vector<int32_t>& out) const override {
    for (const Item& it : single) out.insert(out.end(), it.ids.begin(), it.ids.end());
  }
};

// Adds no tokens; with trim_offsets, offsets drop leading/trailing spaces of their token.
class ByteLevelProcessor final : public PostProcessor {
 public:
  bool trim_offsets = true, add_prefix_space = true;
  void process(EncodingBuffer& enc, bool, const IdToToken& token_text) const override {
    if (!trim_offsets || !enc.with_offsets) return;
    const auto is_space = [](char32_t c) {
      return c == 0x120 || is_whitespace(c);
    };  // 'Ġ' is byte ' '
    for (size_t i = 0; i < enc.ids.size(); ++i) {
      const std::string t = token_text(i);
      std::vector<char32_t> cps;
      for (size_t p = 0; p < t.size();) {
        const Utf8Step st = utf8_step(t, p);
        cps.push_back(st.valid ? st.cp : 0xFFFD);
        p += st.len;
      }
      size_t lead = 0, trail = 0;
      while (lead < cps.size() && is_space(cps[lead])) ++lead;
      while (trail < cps.size() && is_space(cps[cps.size() - 1 - trail])) ++trail;
      auto& [b, e] = enc.offsets[i];
      if (lead > 0) {
        const bool first = i == 0 || b == 0;
        if (first && add_prefix_space && lead == 1) lead = 0;
        b = std::min(b + lead, e);
      }
      if (trail > 0 && e >= trail) e = std::max(e - trail, b);
    }
  }
};

// [CLS] A [SEP]
class BertProcessor final : public PostProcessor {
 public:
  int32_t cls = 0, sep = 0;
  void process(EncodingBuffer& enc, bool add, const IdToToken&) const override {
    if (!add) return;
    enc.ids.insert(enc.ids.begin(), cls);
    enc.ids.push_back(sep);
    if (!enc.with_offsets) return;
    enc.offsets.insert(enc.offsets.begin(), Range{0, 0});
    enc.from_input.insert(enc.from_input.begin(), 0);
    enc.offsets.push_back({0, 0});
    enc.from_input.push_back(0);
  }
  void special_ids(std::vector<int32_t>& out) const override {
    out.push_back(cls);
    out.push_back(sep);
  }
};

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& source) {
  if (j.is_null()) return nullptr;
  MAGIX_CHECK(j.is_object() && j.contains("type"),
              "{}: post_processor must be an object with a 'type'", source);
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    auto p = std::make_unique<SequenceProcessor>();
    for (const auto& part : j.at("processors"))
      p->parts.push_back(make_post_processor(part, source));
    return p;
  }
  if (type == "TemplateProcessing") {
    auto p = std::make_unique<TemplateProcessor>();
    const json& specials = j.value("special_tokens", json::object());
    for (const auto& item : j.at("single")) {
      if (item.contains("Sequence")) {
        MAGIX_CHECK(item.at("Sequence").value("id", std::string("A")) == "A",
                    "{}: TemplateProcessing single template may only use sequence A", source);
        p->single.push_back({true, {}});
      } else if (item.contains("SpecialToken")) {
        const std::string name = item.at("SpecialToken").at("id").get<std::string>();
        MAGIX_CHECK(specials.contains(name),
                    "{}: TemplateProcessing uses special token '{}' that is not in "
                    "its special_tokens",
                    source, name);
        p->single.push_back({false, specials.at(name).at("ids").get<std::vector<int32_t>>()});
      } else {
        MAGIX_FAIL("{}: TemplateProcessing item {} is neither Sequence nor SpecialToken", source,
                   item.dump());
      }
    }
    return p;
  }
  if (type == "ByteLevel") {
    auto p = std::make_unique<ByteLevelProcessor>();
    p->trim_offsets = j.value("trim_offsets", true);
    p->add_prefix_space = j.value("add_prefix_space", true);
    return p;
  }
  if (type == "BertProcessing") {
    auto p = std::make_unique<BertProcessor>();
    p->cls = j.at("cls").at(1).get<int32_t>();
    p->sep = j.at("sep").at(1).get<int32_t>();
    return p;
  }
  MAGIX_FAIL(
      "{}: unsupported post_processor type '{}' (supported: Sequence, TemplateProcessing, "
      "ByteLevel, BertProcessing)",
      source, type);
}

}  // namespace magix::text
