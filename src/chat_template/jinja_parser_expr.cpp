// Expressions of the Jinja parser, from low to high precedence: conditional, or, and, not,
// comparison, + -, ~, * / // %, **, unary - +, then postfix (attribute, subscript, call) and
// filter/test chains. Unknown filters and tests are rejected here, as jinja2 does when compiling.
#include <cerrno>
#include <cstdlib>

#include "chat_template/jinja_builtins.hpp"
#include "chat_template/jinja_parser.hpp"

namespace magix::jinja {

bool Parser::is_tuple_end(std::initializer_list<const char*> extra) const {
  if (cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || is_op(")")) return true;
  for (const char* e : extra) {
    if (is_name(e)) return true;
  }
  return false;
}

ExprPtr Parser::parse_tuple(bool with_condexpr, std::initializer_list<const char*> extra,
                            bool explicit_parens) {
  Pos p = pos();
  std::vector<ExprPtr> items;
  bool is_tuple = false;
  while (true) {
    if (!items.empty()) expect_op(",");
    if (is_tuple_end(extra)) break;
    items.push_back(parse_expression(with_condexpr));
    if (is_op(",")) {
      is_tuple = true;
    } else {
      break;
    }
  }
  if (!is_tuple) {
    if (!items.empty()) return std::move(items[0]);
    if (!explicit_parens) fail(fmt::format("expected an expression, got {}", describe(cur())));
  }
  auto e = make(Expr::K::Tuple, p);
  e->args = std::move(items);
  return e;
}

ExprPtr Parser::parse_expression(bool with_condexpr) {
  enter();
  ExprPtr e = with_condexpr ? parse_condexpr() : parse_or();
  --depth_;
  return e;
}

ExprPtr Parser::parse_condexpr() {
  Pos p = pos();
  ExprPtr expr1 = parse_or();
  while (skip_name("if")) {
    auto e = make(Expr::K::Cond, p);
    ExprPtr cond = parse_or();
    ExprPtr otherwise = skip_name("else") ? parse_condexpr() : nullptr;
    e->args.push_back(std::move(cond));
    e->args.push_back(std::move(expr1));
    e->args.push_back(std::move(otherwise));
    expr1 = std::move(e);
  }
  return expr1;
}

ExprPtr Parser::parse_or() {
  ExprPtr left = parse_and();
  while (is_name("or")) {
    Pos p = pos();
    next();
    left = binary("or", p, std::move(left), parse_and());
  }
  return left;
}

ExprPtr Parser::parse_and() {
  ExprPtr left = parse_not();
  while (is_name("and")) {
    Pos p = pos();
    next();
    left = binary("and", p, std::move(left), parse_not());
  }
  return left;
}

ExprPtr Parser::parse_not() {
  if (is_name("not")) {
    enter();
    Pos p = pos();
    next();
    auto e = make(Expr::K::Unary, p);
    e->name = "not";
    e->args.push_back(parse_not());
    --depth_;
    return e;
  }
  return parse_compare();
}

ExprPtr Parser::parse_compare() {
  Pos p = pos();
  ExprPtr first = parse_math1();
  ExprPtr e;
  while (true) {
    std::string op;
    if (cur().type == Tok::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                  cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
      op = cur().text;
      next();
    } else if (is_name("in")) {
      op = "in";
      next();
    } else if (is_name("not") && peek().type == Tok::Name && peek().text == "in") {
      op = "notin";
      next();
      next();
    } else {
      break;
    }
    if (!e) {
      e = make(Expr::K::Compare, p);
      e->args.push_back(std::move(first));
    }
    e->ops.push_back(op);
    e->args.push_back(parse_math1());
  }
  return e ? std::move(e) : std::move(first);
}

ExprPtr Parser::parse_math1() {
  ExprPtr left = parse_concat();
  while (is_op("+") || is_op("-")) {
    Pos p = pos();
    const char* op = is_op("+") ? "+" : "-";
    next();
    left = binary(op, p, std::move(left), parse_concat());
  }
  return left;
}

ExprPtr Parser::parse_concat() {
  ExprPtr left = parse_math2();
  while (is_op("~")) {
    Pos p = pos();
    next();
    left = binary("~", p, std::move(left), parse_math2());
  }
  return left;
}

ExprPtr Parser::parse_math2() {
  ExprPtr left = parse_pow();
  while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
    Pos p = pos();
    std::string op = cur().text;
    next();
    left = binary(op == "*"    ? "*"
                  : op == "/"  ? "/"
                  : op == "//" ? "//"
                               : "%",
                  p, std::move(left), parse_pow());
  }
  return left;
}

ExprPtr Parser::parse_pow() {
  ExprPtr left = parse_unary(true);
  while (is_op("**")) {
    Pos p = pos();
    next();
    left = binary("**", p, std::move(left), parse_unary(true));
  }
  return left;
}

ExprPtr Parser::parse_unary(bool with_filter) {
  Pos p = pos();
  ExprPtr node;
  if (is_op("-") || is_op("+")) {
    enter();
    auto e = make(Expr::K::Unary, p);
    e->name = cur().text;
    next();
    e->args.push_back(parse_unary(false));
    --depth_;
    node = std::move(e);
  } else {
    node = parse_primary();
  }
  node = parse_postfix(std::move(node));
  if (with_filter) node = parse_filter_expr(std::move(node));
  return node;
}

ExprPtr Parser::parse_primary() {
  const Token& t = cur();
  Pos p = pos();
  if (t.type == Tok::Name) {
    auto e = make(Expr::K::Literal, p);
    if (t.text == "true" || t.text == "True") {
      e->value = Value::boolean(true);
    } else if (t.text == "false" || t.text == "False") {
      e->value = Value::boolean(false);
    } else if (t.text == "none" || t.text == "None") {
      e->value = Value::none();
    } else {
      e->k = Expr::K::Name;
      e->name = t.text;
      if (t.text == "varargs") uses_varargs_ = true;
      if (t.text == "kwargs") uses_kwargs_ = true;
    }
    next();
    return e;
  }
  if (t.type == Tok::String) {
    std::string s;
    while (cur().type == Tok::String) {
      s += cur().text;
      next();
    }
    auto e = make(Expr::K::Literal, p);
    e->value = Value::str(std::move(s));
    return e;
  }
  if (t.type == Tok::Integer) {
    auto e = make(Expr::K::Literal, p);
    errno = 0;
    long long v = std::strtoll(t.text.c_str(), nullptr, 10);
    if (errno == ERANGE) fail("integer literal out of range");
    e->value = Value::integer(v);
    next();
    return e;
  }
  if (t.type == Tok::Float) {
    auto e = make(Expr::K::Literal, p);
    e->value = Value::real(std::strtod(t.text.c_str(), nullptr));
    next();
    return e;
  }
  if (is_op("(")) {
    next();
    ExprPtr e = parse_tuple(true, {}, true);
    expect_op(")");
    return e;
  }
  if (is_op("[")) {
    next();
    auto e = make(Expr::K::List, p);
    while (!is_op("]")) {
      if (!e->args.empty()) expect_op(",");
      if (is_op("]")) break;
      e->args.push_back(parse_expression(true));
    }
    expect_op("]");
    return e;
  }
  if (is_op("{")) {
    next();
    auto e = make(Expr::K::Dict, p);
    while (!is_op("}")) {
      if (!e->args.empty()) expect_op(",");
      if (is_op("}")) break;
      e->args.push_back(parse_expression(true));
      expect_op(":");
      e->args.push_back(parse_expression(true));
    }
    expect_op("}");
    return e;
  }
  fail(fmt::format("unexpected {}", describe(t)));
}

ExprPtr Parser::parse_postfix(ExprPtr node) {
  while (true) {
    Pos p = pos();
    if (is_op(".")) {
      next();
      if (cur().type == Tok::Name) {
        auto e = make(Expr::K::GetAttr, p);
        e->name = cur().text;
        e->args.push_back(std::move(node));
        node = std::move(e);
      } else if (cur().type == Tok::Integer) {
        auto e = make(Expr::K::GetItem, p);
        e->args.push_back(std::move(node));
        auto idx = make(Expr::K::Literal, pos());
        idx->value = Value::integer(std::strtoll(cur().text.c_str(), nullptr, 10));
        e->args.push_back(std::move(idx));
        node = std::move(e);
      } else {
        fail("expected name or number");
      }
      next();
    } else if (is_op("[")) {
      next();
      node = parse_subscript(std::move(node), p);
    } else if (is_op("(")) {
      node = parse_call(std::move(node));
    } else {
      return node;
    }
  }
}

ExprPtr Parser::parse_subscript(ExprPtr node, Pos p) {
  // one subscript: an expression or a slice [a:b:c]; tuples of subscripts are not supported
  ExprPtr parts[3];
  bool is_slice = false;
  if (!is_op(":")) parts[0] = parse_expression(true);
  if (skip_op(":")) {
    is_slice = true;
    if (!is_op("]") && !is_op(":")) parts[1] = parse_expression(true);
    if (skip_op(":")) {
      if (!is_op("]")) parts[2] = parse_expression(true);
    }
  }
  if (is_op(",")) fail("tuple subscripts are not supported");
  expect_op("]");
  auto e = make(is_slice ? Expr::K::Slice : Expr::K::GetItem, p);
  e->args.push_back(std::move(node));
  for (int k = 0; k < (is_slice ? 3 : 1); ++k) e->args.push_back(std::move(parts[k]));
  return e;
}

void Parser::parse_call_args(Expr& e) {
  expect_op("(");
  bool first = true;
  while (!is_op(")")) {
    if (!first) {
      expect_op(",");
      if (is_op(")")) break;
    }
    first = false;
    if (is_op("*") || is_op("**")) fail("*args and **kwargs in calls are not supported");
    if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
      std::string key = cur().text;
      next();
      next();
      e.kwargs.emplace_back(key, parse_expression(true));
    } else {
      if (!e.kwargs.empty()) fail("invalid syntax for function call expression");
      e.args.push_back(parse_expression(true));
    }
  }
  expect_op(")");
}

ExprPtr Parser::parse_call(ExprPtr callee) {
  auto e = make(Expr::K::Call, pos());
  e->args.push_back(std::move(callee));
  parse_call_args(*e);
  return e;
}

ExprPtr Parser::parse_filter_one(ExprPtr node) {
  Pos p = pos();
  auto e = make(Expr::K::Filter, p);
  e->name = expect_name();
  while (is_op(".")) {
    next();
    e->name += '.';
    e->name += expect_name();
  }
  if (!has_filter(e->name)) fail_at(toks_[i_ - 1], fmt::format("No filter named '{}'.", e->name));
  e->args.push_back(std::move(node));
  if (is_op("(")) parse_call_args(*e);
  return e;
}

ExprPtr Parser::parse_filter_chain(ExprPtr node, bool first_has_pipe) {
  if (!first_has_pipe) node = parse_filter_one(std::move(node));
  while (skip_op("|")) node = parse_filter_one(std::move(node));
  return node;
}

ExprPtr Parser::parse_filter_expr(ExprPtr node) {
  while (true) {
    if (is_op("|")) {
      next();
      node = parse_filter_one(std::move(node));
    } else if (is_name("is")) {
      Pos p = pos();
      next();
      auto e = make(Expr::K::Test, p);
      e->negated = skip_name("not");
      e->name = expect_name();
      while (is_op(".")) {
        next();
        e->name += '.';
        e->name += expect_name();
      }
      if (!has_test(e->name)) fail_at(toks_[i_ - 1], fmt::format("No test named '{}'.", e->name));
      e->args.push_back(std::move(node));
      if (is_op("(")) {
        parse_call_args(*e);
      } else if ((cur().type == Tok::Name || cur().type == Tok::String ||
                  cur().type == Tok::Integer || cur().type == Tok::Float || is_op("(") ||
                  is_op("[") || is_op("{")) &&
                 !is_name("else") && !is_name("or") && !is_name("and")) {
        if (is_name("is")) fail("You cannot chain multiple tests with is");
        e->args.push_back(parse_postfix(parse_primary()));
      }
      node = std::move(e);
    } else if (is_op("(")) {
      node = parse_call(std::move(node));
    } else {
      return node;
    }
  }
}

}  // namespace magix::jinja
