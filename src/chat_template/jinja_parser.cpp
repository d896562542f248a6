// Statements of the Jinja parser: the template body, tags, macro signatures, assignment targets.
#include "chat_template/jinja_parser.hpp"

namespace magix::jinja {

Body Parser::parse_body(std::initializer_list<const char*> ends) {
  Body body;
  while (true) {
    const Token& t = cur();
    if (t.type == Tok::Eof) {
      if (ends.size() == 0) return body;
      std::string want;
      for (const char* e : ends) want += (want.empty() ? "'" : " or '") + std::string(e) + "'";
      fail(fmt::format("unexpected end of template, expected {}", want));
    }
    if (t.type == Tok::Data) {
      auto s = std::make_unique<Stmt>();
      s->k = Stmt::K::Text;
      s->pos = pos();
      s->text = t.text;
      body.push_back(std::move(s));
      next();
    } else if (t.type == Tok::VarBegin) {
      next();
      auto s = std::make_unique<Stmt>();
      s->k = Stmt::K::Print;
      s->pos = pos();
      s->expr = parse_tuple(true, {});
      if (cur().type != Tok::VarEnd)
        fail(fmt::format("expected end of print statement, got {}", describe(cur())));
      next();
      body.push_back(std::move(s));
    } else if (t.type == Tok::BlockBegin) {
      next();
      if (cur().type != Tok::Name)
        fail(fmt::format("expected a statement name, got {}", describe(cur())));
      for (const char* e : ends) {
        if (cur().text == e) return body;
      }
      body.push_back(parse_statement());
    } else {
      fail(fmt::format("unexpected {}", describe(t)));
    }
  }
}

void Parser::end_block() {
  next();
  expect_block_end();
}

StmtPtr Parser::parse_statement() {
  enter();
  const Token& t = cur();
  auto s = std::make_unique<Stmt>();
  s->pos = pos();
  const std::string& n = t.text;
  if (n == "if") {
    next();
    s->k = Stmt::K::If;
    s->conds.push_back(parse_tuple(false, {}));
    expect_block_end();
    while (true) {
      s->bodies.push_back(parse_body({"elif", "else", "endif"}));
      if (skip_name("elif")) {
        s->conds.push_back(parse_tuple(false, {}));
        expect_block_end();
        continue;
      }
      if (skip_name("else")) {
        expect_block_end();
        s->else_body = parse_body({"endif"});
      }
      end_block();
      break;
    }
  } else if (n == "for") {
    next();
    s->k = Stmt::K::For;
    s->target = parse_target(true, false);
    if (!skip_name("in")) fail(fmt::format("expected 'in', got {}", describe(cur())));
    s->expr = parse_tuple(false, {"recursive"});
    if (skip_name("if")) s->expr2 = parse_expression(true);
    if (skip_name("recursive")) fail("recursive for loops are not supported");
    expect_block_end();
    ++loop_depth_;
    s->body = parse_body({"endfor", "else"});
    --loop_depth_;
    if (skip_name("else")) {
      expect_block_end();
      s->else_body = parse_body({"endfor"});
    }
    end_block();
  } else if (n == "set") {
    next();
    s->target = parse_target(true, true);
    if (skip_op("=")) {
      s->k = Stmt::K::Set;
      s->expr = parse_tuple(true, {});
      expect_block_end();
    } else {
      s->k = Stmt::K::SetBlock;
      if (is_op("|")) s->expr = parse_filter_chain(nullptr);
      expect_block_end();
      s->body = parse_body({"endset"});
      end_block();
    }
  } else if (n == "macro") {
    next();
    s->k = Stmt::K::Macro;
    s->text = expect_name();
    parse_signature(*s);
    expect_block_end();
    int saved_depth = loop_depth_;
    bool saved_varargs = uses_varargs_, saved_kwargs = uses_kwargs_;
    loop_depth_ = 0;
    uses_varargs_ = uses_kwargs_ = false;
    s->body = parse_body({"endmacro"});
    // as jinja2: a macro accepts extra arguments only if its body reads varargs / kwargs
    s->catch_varargs = uses_varargs_;
    s->catch_kwargs = uses_kwargs_;
    loop_depth_ = saved_depth;
    uses_varargs_ = saved_varargs || uses_varargs_;
    uses_kwargs_ = saved_kwargs || uses_kwargs_;
    end_block();
  } else if (n == "call") {
    next();
    s->k = Stmt::K::CallBlock;
    if (is_op("(")) parse_signature(*s);
    s->expr = parse_expression(true);
    if (s->expr->k != Expr::K::Call) fail_at(t, "expected call");
    expect_block_end();
    s->body = parse_body({"endcall"});
    end_block();
  } else if (n == "filter") {
    next();
    s->k = Stmt::K::FilterBlock;
    s->expr = parse_filter_chain(nullptr, /*first_has_pipe=*/false);
    expect_block_end();
    s->body = parse_body({"endfilter"});
    end_block();
  } else if (n == "with") {
    next();
    s->k = Stmt::K::With;
    while (cur().type != Tok::BlockEnd) {
      if (!s->assignments.empty()) expect_op(",");
      Target target = parse_target(false, false);
      expect_op("=");
      s->assignments.emplace_back(std::move(target), parse_expression(true));
    }
    expect_block_end();
    s->body = parse_body({"endwith"});
    end_block();
  } else if (n == "generation") {
    // transformers' AssistantTracker: renders its body unchanged
    next();
    s->k = Stmt::K::With;
    expect_block_end();
    s->body = parse_body({"endgeneration"});
    end_block();
  } else if (n == "break" || n == "continue") {
    if (loop_depth_ == 0) fail(fmt::format("'{}' outside of a loop", n));
    next();
    s->k = n == "break" ? Stmt::K::Break : Stmt::K::Continue;
    expect_block_end();
  } else {
    fail(fmt::format("unknown or unsupported tag '{}'", n));
  }
  --depth_;
  return s;
}

void Parser::parse_signature(Stmt& s) {
  expect_op("(");
  while (!is_op(")")) {
    if (!s.params.empty()) expect_op(",");
    MacroParam p;
    p.name = expect_name();
    if (skip_op("=")) {
      p.default_value = parse_expression(true);
    } else if (!s.params.empty() && s.params.back().default_value) {
      fail("non-default argument follows default argument");
    }
    s.params.push_back(std::move(p));
  }
  expect_op(")");
}

Target Parser::parse_target(bool with_tuple, bool with_namespace) {
  Target target;
  target.names.push_back(expect_name());
  if (with_namespace && is_op(".")) {
    next();
    target.attr = expect_name();
    return target;
  }
  while (with_tuple && skip_op(",")) {
    if (is_name("in") || cur().type != Tok::Name) break;
    target.names.push_back(expect_name());
  }
  return target;
}

std::shared_ptr<const Template> parse_template(std::string source) {
  auto t = std::make_shared<Template>();
  t->source = std::move(source);
  t->normalized = normalize_source(t->source);
  Parser parser(tokenize(t->normalized));
  t->body = parser.parse_all();
  return t;
}

}  // namespace magix::jinja
