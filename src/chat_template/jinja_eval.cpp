#include "chat_template/jinja_eval.hpp"

#include <ctime>
#include <unordered_map>

#include "chat_template/jinja_builtins.hpp"
#include "magix/error.hpp"

namespace magix::jinja {

namespace {

// An error that already names its template position; passes through outer handlers unchanged.
struct PositionedError : Error {
  using Error::Error;
};

// Variables visible at one level: the template top level, a loop iteration, a macro call.
// jinja2 semantics: `set` writes the innermost scope; a loop iteration starts from the outer
// values each time; namespaces are the way to carry values out of a loop.
struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;

  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent.get()) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};
using ScopePtr = std::shared_ptr<Scope>;

enum class Flow { Normal, Break, Continue };

class Evaluator {
 public:
  Evaluator(const Template& t, const RenderOptions& options)
      : t_(t), options_(options), budget_(options.limits, options.origin) {}
  Evaluator(const Evaluator&) = delete;
  Evaluator& operator=(const Evaluator&) = delete;

  // Macros hold their defining scope and scopes hold macros: a reference cycle; a namespace
  // attribute may hold the namespace itself. The scopes that macros captured and the namespaces
  // that were given containers or callables live until the render ends and are emptied here,
  // which frees them all. Other scopes (a loop iteration's) are freed as soon as they end.
  ~Evaluator() {
    for (const auto& s : captured_scopes_) {
      s->vars.clear();
      s->parent.reset();
    }
    for (const auto& d : shared_namespaces_) d->entries.clear();
  }

  std::string run(const Value& context) {
    BudgetScope installed(budget_);
    auto top = new_scope(nullptr);
    add_globals(*top);
    auto scope = new_scope(top);
    if (context.kind == Kind::Dict) {
      for (const auto& [k, v] : context.dict->entries) top->vars[to_str(k)] = v;
    }
    std::string out;
    exec_body(t_.body, scope, out);
    return out;
  }

 private:
  [[noreturn]] void fail_at(Pos p, const std::string& what) const {
    throw PositionedError(
        fmt::format("chat template error at line {}, column {}: {}", p.line, p.column, what),
        "jinja");
  }

  void add_globals(Scope& s) {
    s.vars["range"] = Value::function("range", [](const Args& a) {
      int64_t start = 0, stop = 0, step = 1;
      for (const Value& v : a.pos) {
        if (!v.is_int_like())
          MAGIX_FAIL("'{}' object cannot be interpreted as an integer", type_name(v));
      }
      if (a.pos.size() == 1) {
        stop = a.pos[0].i;
      } else if (a.pos.size() == 2 || a.pos.size() == 3) {
        start = a.pos[0].i;
        stop = a.pos[1].i;
        if (a.pos.size() == 3) step = a.pos[2].i;
      } else {
        MAGIX_FAIL("range expected 1 to 3 arguments, got {}", a.pos.size());
      }
      if (step == 0) MAGIX_FAIL("range() arg 3 must not be zero");
      std::vector<Value> out;
      if (step > 0 ? start < stop : start > stop) {
        uint64_t span = step > 0 ? static_cast<uint64_t>(stop) - static_cast<uint64_t>(start)
                                 : static_cast<uint64_t>(start) - static_cast<uint64_t>(stop);
        uint64_t mag = step > 0 ? static_cast<uint64_t>(step) : 0 - static_cast<uint64_t>(step);
        budget_check_size(std::min<uint64_t>((span + mag - 1) / mag, 100001), "list");
      }
      for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
        if (out.size() >= 100000)
          MAGIX_FAIL("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        out.push_back(Value::integer(k));
      }
      return Value::make_list(std::move(out));
    });
    auto from_args = [](const Args& a, bool check_names) {
      Dict d;
      if (!a.pos.empty()) {
        if (a.pos.size() > 1)
          MAGIX_FAIL("expected at most 1 positional argument, got {}", a.pos.size());
        if (a.pos[0].kind == Kind::Dict) {
          d = *a.pos[0].dict;
        } else {
          for (const Value& pair : iterate(a.pos[0])) {
            if (!pair.is_sequence() || pair.items().size() != 2)
              MAGIX_FAIL("dictionary update sequence element has wrong length");
            d.set(pair.items()[0], pair.items()[1]);
          }
        }
      }
      for (const auto& [k, v] : a.kw) d.set(Value::str(k), v);
      if (check_names) {
        for (const auto& [k, v] : d.entries) {
          if (k.kind == Kind::String && !k.s.empty() && k.s[0] == '_') {
            MAGIX_FAIL(
                "Chat templates cannot store underscore-prefixed attributes on a namespace, but "
                "got {}. "
                "Please rename the attribute.",
                repr(k));
          }
        }
      }
      return d;
    };
    s.vars["namespace"] = Value::function("namespace", [from_args](const Args& a) {
      return Value::make_namespace(from_args(a, true));
    });
    s.vars["dict"] = Value::function(
        "dict", [from_args](const Args& a) { return Value::make_dict(from_args(a, false)); });
    s.vars["raise_exception"] = Value::function("raise_exception", [](const Args& a) -> Value {
      throw RaisedByTemplate{a.pos.empty() ? std::string() : to_str(a.pos[0])};
    });
    auto now = options_.now;
    s.vars["strftime_now"] = Value::function("strftime_now", [now](const Args& a) {
      if (a.pos.empty() || a.pos[0].kind != Kind::String)
        MAGIX_FAIL("strftime_now expects a format string");
      auto tp = now ? now() : std::chrono::system_clock::now();
      std::time_t tt = std::chrono::system_clock::to_time_t(tp);
      std::tm tm{};
      localtime_r(&tt, &tm);
      char buf[512];
      size_t n = std::strftime(buf, sizeof buf, a.pos[0].s.c_str(), &tm);
      return Value::str(std::string(buf, n));
    });
  }

  static ScopePtr new_scope(ScopePtr parent) {
    auto s = std::make_shared<Scope>();
    s->parent = std::move(parent);
    return s;
  }

  // Appends to a render's output (the template's, a macro's, a block's), within the budget.
  void emit(std::string& out, std::string_view text) {
    budget_.check_output(out.size() + text.size());
    budget_.check_size(text.size(), "string");
    out += text;
  }

  // ---- statements ----

  Flow exec_body(const Body& body, const ScopePtr& scope, std::string& out) {
    for (const auto& s : body) {
      Flow f = exec(*s, scope, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  // Guards the evaluator's recursion (statements, expressions and macro calls nest).
  struct Nest {
    Evaluator& e;
    explicit Nest(Evaluator& ev) : e(ev) {
      if (++e.nesting_ > kMaxNesting)
        e.budget_.fail(
            fmt::format("the limit of {} nested statements, expressions and calls", kMaxNesting));
    }
    ~Nest() { --e.nesting_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;
  };

  Flow exec(const Stmt& s, const ScopePtr& scope, std::string& out) {
    try {
      Nest nest(*this);
      return exec_inner(s, scope, out);
    } catch (const PositionedError&) {
      throw;
    } catch (const BudgetExceeded&) {
      throw;
    } catch (const Error& e) {
      fail_at(s.pos, e.what());
    }
  }

  void assign(const Target& target, const Value& v, const ScopePtr& scope, Pos p) {
    if (!target.attr.empty()) {
      const Value* ns = scope->find(target.names[0]);
      if (!ns || ns->kind != Kind::Namespace)
        fail_at(p, "cannot assign attribute on non-namespace object");
      if (target.attr[0] == '_') {
        fail_at(p, fmt::format("Chat templates cannot store underscore-prefixed attributes on a "
                               "namespace, but got '{}'. "
                               "Please rename the attribute.",
                               target.attr));
      }
      bool shares = v.kind == Kind::List || v.kind == Kind::Tuple || v.kind == Kind::Dict ||
                    v.kind == Kind::Namespace || v.kind == Kind::Callable;
      if (shares && (shared_namespaces_.empty() || shared_namespaces_.back() != ns->dict))
        shared_namespaces_.push_back(ns->dict);  // may now be part of a cycle (see ~Evaluator)
      ns->dict->set(Value::str(target.attr), v);
      return;
    }
    if (target.names.size() == 1) {
      scope->vars[target.names[0]] = v;
      return;
    }
    auto items = iterate(v);
    if (items.size() != target.names.size()) {
      fail_at(p, fmt::format("{} values to unpack (expected {}, got {})",
                             items.size() > target.names.size() ? "too many" : "not enough",
                             target.names.size(), items.size()));
    }
    for (size_t k = 0; k < items.size(); ++k) scope->vars[target.names[k]] = items[k];
  }

  Flow exec_inner(const Stmt& s, const ScopePtr& scope, std::string& out) {
    switch (s.k) {
      case Stmt::K::Text:
        emit(out, s.text);
        return Flow::Normal;
      case Stmt::K::Print:
        emit(out, to_str(eval(*s.expr, scope)));
        return Flow::Normal;
      case Stmt::K::If:
        for (size_t k = 0; k < s.conds.size(); ++k) {
          if (truthy(eval(*s.conds[k], scope))) return exec_body(s.bodies[k], scope, out);
        }
        return exec_body(s.else_body, scope, out);
      case Stmt::K::For:
        return exec_for(s, scope, out);
      case Stmt::K::Set:
        assign(s.target, eval(*s.expr, scope), scope, s.pos);
        return Flow::Normal;
      case Stmt::K::SetBlock: {
        std::string text;
        exec_body(s.body, scope, text);
        Value v = Value::str(std::move(text));
        if (s.expr) v = eval_with_base(*s.expr, scope, v);
        assign(s.target, v, scope, s.pos);
        return Flow::Normal;
      }
      case Stmt::K::FilterBlock: {
        std::string text;
        exec_body(s.body, scope, text);
        emit(out, to_str(eval_with_base(*s.expr, scope, Value::str(std::move(text)))));
        return Flow::Normal;
      }
      case Stmt::K::Macro:
        scope->vars[s.text] = make_macro(s, scope, Value::undefined());
        return Flow::Normal;
      case Stmt::K::CallBlock: {
        const Expr& call = *s.expr;
        Value caller = make_macro(s, scope, Value::undefined());
        Value callee = eval(*call.args[0], scope);
        Args args = eval_args(call, scope);
        args.kw.emplace_back("caller", caller);
        emit(out, to_str(call_value(callee, args, call.pos)));
        return Flow::Normal;
      }
      case Stmt::K::With: {
        auto inner = new_scope(scope);
        std::vector<Value> values;
        for (const auto& [target, expr] : s.assignments) values.push_back(eval(*expr, scope));
        for (size_t k = 0; k < values.size(); ++k)
          assign(s.assignments[k].first, values[k], inner, s.pos);
        return exec_body(s.body, inner, out);
      }
      case Stmt::K::Break:
        return Flow::Break;
      case Stmt::K::Continue:
        return Flow::Continue;
    }
    return Flow::Normal;
  }

  Flow exec_for(const Stmt& s, const ScopePtr& scope, std::string& out) {
    Value seq = eval(*s.expr, scope);
    if (seq.kind == Kind::None) fail_at(s.expr->pos, "'NoneType' object is not iterable");
    std::vector<Value> items = iterate(seq);
    if (s.expr2) {
      std::vector<Value> kept;
      for (const Value& item : items) {
        budget_.count_iteration();
        auto probe = new_scope(scope);
        assign(s.target, item, probe, s.pos);
        if (truthy(eval(*s.expr2, probe))) kept.push_back(item);
      }
      items = std::move(kept);
    }
    size_t n = items.size();
    for (size_t k = 0; k < n; ++k) {
      budget_.count_iteration();
      auto iter = new_scope(scope);
      Dict loop;
      auto set = [&](const char* key, Value v) {
        loop.entries.emplace_back(Value::str(key), std::move(v));
      };
      auto len = static_cast<int64_t>(n), idx = static_cast<int64_t>(k);
      set("index", Value::integer(idx + 1));
      set("index0", Value::integer(idx));
      set("revindex", Value::integer(len - idx));
      set("revindex0", Value::integer(len - idx - 1));
      set("first", Value::boolean(k == 0));
      set("last", Value::boolean(k + 1 == n));
      set("length", Value::integer(len));
      set("depth", Value::integer(1));
      set("depth0", Value::integer(0));
      if (k > 0) set("previtem", items[k - 1]);
      if (k + 1 < n) set("nextitem", items[k + 1]);
      set("cycle", Value::function("loop.cycle", [idx](const Args& a) {
            if (a.pos.empty()) MAGIX_FAIL("no items for cycling given");
            return a.pos[static_cast<size_t>(idx) % a.pos.size()];
          }));
      iter->vars["loop"] = Value::make_dict(std::move(loop));
      assign(s.target, items[k], iter, s.pos);
      Flow f = exec_body(s.body, iter, out);
      if (f == Flow::Break) break;
    }
    if (n == 0) {
      auto inner = new_scope(scope);
      exec_body(s.else_body, inner, out);
    }
    return Flow::Normal;
  }

  // A macro (or the caller of a call block): renders its body in a new scope under `defined_in`.
  Value make_macro(const Stmt& s, const ScopePtr& defined_in, const Value& caller) {
    const Stmt* stmt = &s;
    if (captured_scopes_.empty() || captured_scopes_.back() != defined_in)
      captured_scopes_.push_back(defined_in);  // may now be part of a cycle (see ~Evaluator)
    return Value::function(s.k == Stmt::K::Macro ? s.text : "caller", [this, stmt, defined_in,
                                                                       caller](const Args& a) {
      if (call_depth_ >= std::min(kMaxCallDepth, budget_.limits().max_depth))
        MAGIX_FAIL("maximum recursion depth exceeded in macro '{}'", stmt->text);
      ++call_depth_;
      struct Leave {
        int& depth;
        ~Leave() { --depth; }
      } leave{call_depth_};
      auto call = new_scope(defined_in);
      const auto& params = stmt->params;
      std::vector<Value> extra_pos;
      for (size_t k = 0; k < a.pos.size(); ++k) {
        if (k < params.size()) {
          call->vars[params[k].name] = a.pos[k];
        } else if (stmt->catch_varargs) {
          extra_pos.push_back(a.pos[k]);
        } else {
          MAGIX_FAIL("macro '{}' takes not more than {} argument(s)", stmt->text, params.size());
        }
      }
      Dict extra_kw;
      for (const auto& [name, v] : a.kw) {
        bool is_param = false;
        for (size_t k = 0; k < params.size(); ++k) {
          if (params[k].name != name) continue;
          if (k < a.pos.size())
            MAGIX_FAIL("macro '{}' got multiple values for argument '{}'", stmt->text, name);
          call->vars[name] = v;
          is_param = true;
        }
        if (!is_param) {
          if (name == "caller") {
            call->vars["caller"] = v;
          } else if (stmt->catch_kwargs) {
            extra_kw.set(Value::str(name), v);
          } else {
            MAGIX_FAIL("macro '{}' takes no keyword argument '{}'", stmt->text, name);
          }
        }
      }
      for (const auto& p : params) {
        if (call->vars.count(p.name)) continue;
        call->vars[p.name] =
            p.default_value
                ? eval(*p.default_value, call)
                : Value::undefined(fmt::format("parameter '{}' was not provided", p.name));
      }
      call->vars["varargs"] = Value::make_tuple(std::move(extra_pos));
      call->vars["kwargs"] = Value::make_dict(std::move(extra_kw));
      std::string out;
      exec_body(stmt->body, call, out);
      return Value::str(std::move(out));
    });
  }

  // ---- expressions ----

  Value eval(const Expr& e, const ScopePtr& scope) {
    try {
      Nest nest(*this);
      return eval_inner(e, scope);
    } catch (const PositionedError&) {
      throw;
    } catch (const BudgetExceeded&) {
      throw;
    } catch (const Error& err) {
      fail_at(e.pos, err.what());
    }
  }

  // A filter chain whose innermost operand is null (set/filter blocks): `base` stands for it.
  Value eval_with_base(const Expr& e, const ScopePtr& scope, const Value& base) {
    Value saved = filter_base_;
    filter_base_ = base;
    Value v = eval(e, scope);
    filter_base_ = saved;
    return v;
  }

  Args eval_args(const Expr& e, const ScopePtr& scope) {
    Args a;
    for (size_t k = 1; k < e.args.size(); ++k) a.pos.push_back(eval(*e.args[k], scope));
    for (const auto& [name, x] : e.kwargs) a.kw.emplace_back(name, eval(*x, scope));
    return a;
  }

  Value call_value(const Value& callee, const Args& args, Pos p) {
    if (callee.is_undefined()) fail_undefined(callee);
    if (callee.kind != Kind::Callable)
      fail_at(p, fmt::format("'{}' object is not callable", type_name(callee)));
    return callee.fn->call(args);
  }

  Value eval_inner(const Expr& e, const ScopePtr& scope) {
    switch (e.k) {
      case Expr::K::Literal:
        return e.value;
      case Expr::K::Name: {
        if (const Value* v = scope->find(e.name)) return *v;
        return Value::undefined(fmt::format("'{}' is undefined", e.name));
      }
      case Expr::K::List:
      case Expr::K::Tuple: {
        std::vector<Value> items;
        for (const auto& x : e.args) items.push_back(eval(*x, scope));
        return e.k == Expr::K::List ? Value::make_list(std::move(items))
                                    : Value::make_tuple(std::move(items));
      }
      case Expr::K::Dict: {
        Dict d;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2)
          d.set(eval(*e.args[k], scope), eval(*e.args[k + 1], scope));
        return Value::make_dict(std::move(d));
      }
      case Expr::K::GetAttr:
        return get_attr(eval(*e.args[0], scope), e.name);
      case Expr::K::GetItem:
        return get_item(eval(*e.args[0], scope), eval(*e.args[1], scope));
      case Expr::K::Slice: {
        Value obj = eval(*e.args[0], scope);
        Value parts[3];
        for (int k = 0; k < 3; ++k)
          parts[k] = e.args[static_cast<size_t>(k) + 1]
                         ? eval(*e.args[static_cast<size_t>(k) + 1], scope)
                         : Value::none();
        return get_slice(obj, parts[0], parts[1], parts[2]);
      }
      case Expr::K::Call: {
        Value callee = eval(*e.args[0], scope);
        return call_value(callee, eval_args(e, scope), e.pos);
      }
      case Expr::K::Filter: {
        Value v = e.args[0] ? eval(*e.args[0], scope) : filter_base_;
        return call_filter(e.name, v, eval_args(e, scope));
      }
      case Expr::K::Test: {
        Value v = eval(*e.args[0], scope);
        bool r = call_test(e.name, v, eval_args(e, scope));
        return Value::boolean(e.negated ? !r : r);
      }
      case Expr::K::Unary: {
        Value v = eval(*e.args[0], scope);
        if (e.name == "not") return Value::boolean(!truthy(v));
        if (e.name == "-") return negate(v);
        if (v.is_undefined()) fail_undefined(v);
        if (!v.is_number()) MAGIX_FAIL("bad operand type for unary +: '{}'", type_name(v));
        return v.kind == Kind::Bool ? Value::integer(v.i) : v;
      }
      case Expr::K::Binary: {
        if (e.name == "and" || e.name == "or") {
          Value l = eval(*e.args[0], scope);
          if (truthy(l) == (e.name == "or")) return l;
          return eval(*e.args[1], scope);
        }
        Value l = eval(*e.args[0], scope);
        Value r = eval(*e.args[1], scope);
        if (e.name == "~") {
          std::string ls = to_str(l), rs = to_str(r);
          budget_.check_size(ls.size() + rs.size(), "string");
          return Value::str(ls + rs);
        }
        return binary_op(e.name, l, r);
      }
      case Expr::K::Compare: {
        Value left = eval(*e.args[0], scope);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value right = eval(*e.args[k + 1], scope);
          const std::string& op = e.ops[k];
          bool r;
          if (op == "==") {
            r = equals(left, right);
          } else if (op == "!=") {
            r = !equals(left, right);
          } else if (op == "in" || op == "notin") {
            r = contains(right, left) == (op == "in");
          } else {
            if (left.is_undefined()) fail_undefined(left);
            if (right.is_undefined()) fail_undefined(right);
            r = op == "<"    ? less_than(left, right)
                : op == "<=" ? !less_than(right, left)
                : op == ">"  ? less_than(right, left)
                             : !less_than(left, right);
          }
          if (!r) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case Expr::K::Cond: {
        if (truthy(eval(*e.args[0], scope))) return eval(*e.args[1], scope);
        if (e.args[2]) return eval(*e.args[2], scope);
        return Value::undefined(
            "the inline if-expression evaluated to false and no else section was defined.");
      }
    }
    return Value::undefined();
  }

  static constexpr int kMaxCallDepth = 100;  // macro recursion: an error, not a stack overflow
  // Nested exec/eval frames: deep enough for any parsed template (the parser allows 200 levels
  // of nesting) inside 100 macro calls, shallow enough for the stack of a worker thread.
  static constexpr int kMaxNesting = 3000;
  const Template& t_;
  const RenderOptions& options_;
  RenderBudget budget_;
  Value filter_base_;
  int call_depth_ = 0, nesting_ = 0;
  std::vector<ScopePtr> captured_scopes_;                 // scopes held by macros (see ~Evaluator)
  std::vector<std::shared_ptr<Dict>> shared_namespaces_;  // (see ~Evaluator)
};

}  // namespace

std::string render_template(const Template& t, const Value& context, const RenderOptions& options) {
  return Evaluator(t, options).run(context);
}

}  // namespace magix::jinja
