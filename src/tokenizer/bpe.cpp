#include "tokenizer/bpe.hpp"

#include <queue>

#include "magix/error.hpp"
#include "magix/json_parse.hpp"
#include "tokenizer/unicode.hpp"

namespace magix::text {
namespace {

std::string byte_token_name(unsigned char b) {
  return fmt::format("<0x{:02X}>", b);
}

// "<0xAB>" -> 0xAB; -1 if `t` does not look like a byte token; -2 if it does but is malformed.
int parse_byte_token(std::string_view t) {
  if (t.size() < 4 || t.substr(0, 3) != "<0x" || t.back() != '>') return -1;
  const std::string_view hex = t.substr(3, t.size() - 4);
  if (hex.size() != 2) return -2;
  int v = 0;
  for (char c : hex) {
    v *= 16;
    if (c >= '0' && c <= '9')
      v += c - '0';
    else if (c >= 'A' && c <= 'F')
      v += c - 'A' + 10;
    else
      return -2;
  }
  return v;
}

}  // namespace

BpeModel::BpeModel(const nlohmann::json& m, const std::string& source) : source_(source) {
  const std::string where = source + ": model";
  json_expect_object(m, json_key_name(source, "model"));
  const std::string type = json_value<std::string>(m, "type", "BPE", where);
  MAGIX_CHECK(type == "BPE", "{}: unsupported model type '{}' (supported: BPE)", source, type);
  const nlohmann::json& vocab = json_object_at(m, "vocab", where);
  MAGIX_CHECK(json_value<double>(m, "dropout", 0.0, where) == 0.0,
              "{}: BPE dropout is not supported", source);
  for (const auto& [token, id_json] : vocab.items()) {
    MAGIX_CHECK(id_json.is_number_integer(), "{}: vocab entry '{}' has a non-integer id", source,
                token);
    const int64_t id = id_json.get<int64_t>();
    MAGIX_CHECK(id >= 0 && id < (int64_t{1} << 31) - 1, "{}: vocab id {} of '{}' out of range",
                source, id, token);
    vocab_[token] = static_cast<int32_t>(id);
    if (static_cast<size_t>(id) >= id_to_token_.size()) {
      id_to_token_.resize(static_cast<size_t>(id) + 1);
      has_id_.resize(static_cast<size_t>(id) + 1, false);
    }
    // HF tokenizers keeps one of the two silently: decoding that id would give the wrong text.
    MAGIX_CHECK(!has_id_[static_cast<size_t>(id)],
                "{}: model.vocab gives id {} to both '{}' and '{}' (each id must name one token)",
                source, id, id_to_token_[static_cast<size_t>(id)], token);
    id_to_token_[static_cast<size_t>(id)] = token;
    has_id_[static_cast<size_t>(id)] = true;
  }
  prefix_ = json_value<std::string>(m, "continuing_subword_prefix", "", where);
  suffix_ = json_value<std::string>(m, "end_of_word_suffix", "", where);
  byte_fallback_ = json_value<bool>(m, "byte_fallback", false, where);
  fuse_unk_ = json_value<bool>(m, "fuse_unk", false, where);
  ignore_merges_ = json_value<bool>(m, "ignore_merges", false, where);
  if (json_find(m, "unk_token")) {
    unk_token_ = json_get<std::string>(m, "unk_token", where);
    const auto it = vocab_.find(unk_token_);
    MAGIX_CHECK(it != vocab_.end(), "{}: unk_token '{}' is not in the vocab", source, unk_token_);
    unk_id_ = it->second;
  }

  // Byte tokens: validated whenever present; with byte_fallback a missing one is an error at the
  // point it is needed (byte_token()).
  byte_tokens_.assign(256, -1);
  for (const auto& [token, id] : vocab_) {
    const int b = parse_byte_token(token);
    MAGIX_CHECK(b != -2 || !byte_fallback_,
                "{}: malformed byte token '{}' (expected <0xHH>, uppercase hex)", source, token);
    if (b >= 0) byte_tokens_[static_cast<size_t>(b)] = id;
  }

  const auto token_id = [&](const std::string& t, size_t rank) {
    const auto it = vocab_.find(t);
    MAGIX_CHECK(it != vocab_.end(), "{}: merge #{} uses '{}' which is not in the vocab", source,
                rank, t);
    return it->second;
  };
  static const nlohmann::json kNoMerges = nlohmann::json::array();
  const nlohmann::json& merges =
      json_find(m, "merges") ? json_array_at(m, "merges", where) : kNoMerges;
  merges_.reserve(merges.size() * 2);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& mj = merges[rank];
    std::string a, b;
    if (mj.is_string()) {
      const std::string s = mj.get<std::string>();
      const size_t sp = s.find(' ');
      MAGIX_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                  "{}: merge #{} '{}' is not of the form 'a b'", source, rank, s);
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else {
      MAGIX_CHECK(mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string(),
                  "{}: merge #{} must be 'a b' or [a, b]", source, rank);
      a = mj[0].get<std::string>();
      b = mj[1].get<std::string>();
    }
    // The merged token drops the right part's continuing_subword_prefix.
    const bool strip = !prefix_.empty() && b.compare(0, prefix_.size(), prefix_) == 0;
    const std::string merged = a + b.substr(strip ? prefix_.size() : 0);
    const int32_t ia = token_id(a, rank), ib = token_id(b, rank), im = token_id(merged, rank);
    merges_[pair_key(ia, ib)] = Merge{static_cast<int32_t>(rank), im};  // later duplicates win
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[static_cast<size_t>(id)])
    return nullptr;
  return &id_to_token_[static_cast<size_t>(id)];
}

int32_t BpeModel::byte_token(unsigned char b) const {
  const int32_t id = byte_tokens_[b];
  MAGIX_CHECK(id >= 0, "{}: byte_fallback needs the byte token '{}' which is not in the vocab",
              source_, byte_token_name(b));
  return id;
}

void BpeModel::tokenize(std::string_view word, std::vector<ModelToken>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back({it->second, 0, word.size()});
      return;
    }
  }
  // Symbols form a doubly linked list over the characters of the word; a merge folds the right
  // symbol into the left one (len of the right becomes 0).
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    size_t begin, len;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&](int32_t id, size_t begin, size_t len) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, begin, len});
  };
  struct PendingUnk {
    bool active = false;
    size_t begin = 0, len = 0;
  } unk;  // unknown characters not yet added (fused when fuse_unk)
  std::string buf;
  for (size_t i = 0; i < word.size();) {
    const size_t n = utf8_len(static_cast<unsigned char>(word[i]));
    const bool last = i + n >= word.size();
    std::string_view s = word.substr(i, n);
    if ((i > 0 && !prefix_.empty()) || (last && !suffix_.empty())) {
      buf.clear();
      if (i > 0) buf += prefix_;
      buf += s;
      if (last) buf += suffix_;
      s = buf;
    }
    if (const auto it = vocab_.find(s); it != vocab_.end()) {
      if (unk.active) {
        add(*unk_id_, unk.begin, unk.len);
        unk.active = false;
      }
      add(it->second, i, n);
    } else if (byte_fallback_) {
      for (size_t k = 0; k < s.size(); ++k)
        add(byte_token(static_cast<unsigned char>(s[k])), i + std::min(k, n - 1), 1);
    } else if (unk_id_) {
      if (unk.active && fuse_unk_) {
        unk.len += n;
      } else {
        if (unk.active) add(*unk_id_, unk.begin, unk.len);
        unk = {true, i, n};
      }
    }
    // Without byte fallback or unk token, an unknown character is dropped (as HF does).
    i += n;
  }
  if (unk.active) add(*unk_id_, unk.begin, unk.len);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank, pos, new_id;
    bool operator<(const Candidate& o) const {  // lowest rank first, then leftmost
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  const auto find_merge = [&](int32_t a, int32_t b) -> const Merge* {
    const auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t k = 0; k + 1 < symbols.size(); ++k) {
    if (const Merge* m = find_merge(symbols[k].id, symbols[k + 1].id)) {
      queue.push({m->rank, static_cast<int32_t>(k), m->new_id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(top.pos)];
    if (left.len == 0 || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    const Merge* m = find_merge(left.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale entry
    left.id = top.new_id;
    left.len += right.len;
    left.next = right.next;
    right.len = 0;
    if (left.next >= 0) symbols[static_cast<size_t>(left.next)].prev = top.pos;
    if (left.prev >= 0) {
      const Symbol& p = symbols[static_cast<size_t>(left.prev)];
      if (const Merge* pm = find_merge(p.id, left.id))
        queue.push({pm->rank, left.prev, pm->new_id});
    }
    if (left.next >= 0) {
      const Symbol& nx = symbols[static_cast<size_t>(left.next)];
      if (const Merge* nm = find_merge(left.id, nx.id)) queue.push({nm->rank, top.pos, nm->new_id});
    }
  }
  for (const Symbol& s : symbols) {
    if (s.len > 0) out.push_back({s.id, s.begin, s.begin + s.len});
  }
}

}  // namespace magix::text
