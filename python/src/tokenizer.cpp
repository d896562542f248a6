// magix.Tokenizer: tokenizer.json (+ tokenizer_config.json) and chat templates.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "bindings.hpp"
#include "magix/chat_template.hpp"
#include "magix/error.hpp"
#include "magix/tokenizer.hpp"

namespace magix::python {

void bind_tokenizer(nb::module_& m) {
  nb::class_<Tokenizer>(m, "Tokenizer")
      .def_static(
          "from_pretrained",
          [](const std::string& name_or_path) { return Tokenizer::load(name_or_path); },
          nb::arg("name_or_path"))
      .def(
          "encode",
          [](const Tokenizer& t, const std::string& text, bool add_special_tokens) {
            nb::gil_scoped_release release;
            return t.encode(text, add_special_tokens);
          },
          nb::arg("text"), nb::arg("add_special_tokens") = true)
      .def(
          "decode",
          [](const Tokenizer& t, const std::vector<int32_t>& ids, bool skip_special_tokens) {
            return t.decode(ids, skip_special_tokens);
          },
          nb::arg("ids"), nb::arg("skip_special_tokens") = true)
      .def_prop_ro("vocab_size", &Tokenizer::vocab_size)
      .def(
          "token_to_id",
          [](const Tokenizer& t, const std::string& token) { return t.token_to_id(token); },
          nb::arg("token"))
      .def("id_to_token", &Tokenizer::id_to_token, nb::arg("id"))
      .def_prop_ro("eos_token", [](const Tokenizer& t) { return t.config().eos_token; })
      .def_prop_ro("bos_token", [](const Tokenizer& t) { return t.config().bos_token; })
      // messages and extra as JSON text (the package's wrapper serialises them).
      .def(
          "_apply_chat_template",
          [](const Tokenizer& t, const std::string& messages, bool add_generation_prompt,
             const std::string& extra, const std::optional<std::string>& name) {
            // As transformers: no template is an error (the built-in format only by name).
            MAGIX_CHECK(name == kBuiltinChatFormat || t.config().chat_template(name),
                        "the tokenizer has no chat template: pass chat_template=\"{}\" for the "
                        "reference scripts' built-in format",
                        kBuiltinChatFormat);
            return apply_chat_template(t.config(), nlohmann::ordered_json::parse(messages),
                                       add_generation_prompt, nlohmann::ordered_json::parse(extra),
                                       name);
          },
          nb::arg("messages"), nb::arg("add_generation_prompt"), nb::arg("extra"),
          nb::arg("chat_template").none());
}

}  // namespace magix::python
