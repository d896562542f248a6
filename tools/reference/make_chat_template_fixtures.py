#!/usr/bin/env python3
"""Writes the chat template fixtures of tests/jinja (run with /work/refenv/bin/python).

1. tests/fixtures/chat_templates/features.jsonl: small templates + contexts rendered by
   transformers' own jinja2 environment (_compile_jinja_template: ImmutableSandboxedEnvironment,
   trim_blocks, lstrip_blocks, loopcontrols, tojson, raise_exception, namespace, ...).
   Each line: {"template", "context", "output"} or {"template", "context", "error", "kind"}.
2. tests/fixtures/chat_templates/conversations.jsonl: conversations rendered with
   PreTrainedTokenizerFast.apply_chat_template(tokenize=False) for the real tokenizers in
   ../shared/tokenizers (their templates are read there at test time, not copied) and for the
   synthetic templates of tests/fixtures/chat_templates/templates/ (written here, by us).
   Each line: {"tokenizer" or "template", "messages", "add_generation_prompt", "extra",
   "output" | "error"}.
"""
import json
import lzma
import os
import shutil
import sys
import tempfile

from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import _compile_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "chat_templates")
SHARED = os.path.join(ROOT, "..", "shared", "tokenizers")

# ---------------------------------------------------------------- synthetic templates (ours)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)
ZEPHYR = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)
CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Llama-3.1-style (our own writing): date_string, tools as JSON, tool calls, ipython results.
LLAMA31_TOOLS = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none %}
    {{- "You have access to the following functions:\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""
SYNTHETIC = {"mistral_inst": MISTRAL, "zephyr": ZEPHYR, "chatml": CHATML, "llama31_tools": LLAMA31_TOOLS}

# ---------------------------------------------------------------- conversations
TRICKY = "Line one\nline two\n\n  indented\ttab \"quotes\" 'single' {{ not jinja }} {% raw %} é漢字🙂 \\ back"
BASIC = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"},
     {"role": "user", "content": "Tell me a joke."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"},
     {"role": "assistant", "content": "6"}],
    [{"role": "user", "content": TRICKY}, {"role": "assistant", "content": "  padded answer  \n"}],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": "   "}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "a", "name": None}],
]
BAD_ALTERNATION = [
    [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
    [{"role": "assistant", "content": "I start"}],
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city: é ünïcode",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}, "days": {"type": "integer", "default": 1}},
                                               "required": ["city"]}}}]
TOOL_CONV = [
    {"role": "system", "content": "You can call tools."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
    {"role": "tool", "content": "{\"temp\": 21.5, \"sky\": \"clear\"}"},
    {"role": "assistant", "content": "It is 21.5°C and clear."},
]
QWEN_EXTRA = [
    [{"role": "user", "content": "Think first."},
     {"role": "assistant", "content": "<think>\nreasoning here\n</think>\n\nThe answer."},
     {"role": "user", "content": "Again"}],
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "because"}],
    [{"role": "user", "content": "q"},
     {"role": "assistant", "content": "calling", "tool_calls": [
         {"function": {"name": "f", "arguments": "{\"x\": 1}"}},
         {"function": {"name": "g", "arguments": {"y": [1, 2.5, None, True]}}}]},
     {"role": "tool", "content": "r1"}, {"role": "tool", "content": "r2"},
     {"role": "user", "content": "<tool_response>\nx\n</tool_response>"}],
]


def conversation_cases(name):
    cases = []
    for msgs in BASIC:
        for agp in (False, True):
            cases.append((msgs, agp, {}))
    if name in ("gemma3", "mistral_inst"):
        for msgs in BAD_ALTERNATION:
            cases.append((msgs, False, {}))
    if name == "qwen3":
        for msgs in QWEN_EXTRA:
            cases.append((msgs, True, {}))
            cases.append((msgs, True, {"enable_thinking": False}))
        cases.append((TOOL_CONV, True, {"tools": TOOLS}))
        cases.append((TOOL_CONV, False, {}))
    if name in ("llama31_tools", "llama3_1"):
        cases.append((TOOL_CONV, True, {"tools": TOOLS, "date_string": "01 Jan 2025"}))
        cases.append((BASIC[1], True, {"date_string": "21 Nov 2026"}))
    if name == "gemma3":
        cases.append(([{"role": "system", "content": [{"type": "text", "text": "sys as parts"}]},
                       {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " look "}]}], True, {}))
    return cases


def render_with(tok, msgs, agp, extra):
    kwargs = dict(extra)
    tools = kwargs.pop("tools", None)
    try:
        return {"output": tok.apply_chat_template(msgs, tools=tools, add_generation_prompt=agp, tokenize=False, **kwargs)}
    except Exception as e:  # jinja2.exceptions.TemplateError from raise_exception
        return {"error": str(e)}


def write_conversations():
    rows = []
    tmp = tempfile.mkdtemp()
    try:
        for name in ("gemma3", "llama3", "llama3_1", "qwen3", "mistral"):
            d = os.path.join(tmp, name)
            os.makedirs(d)
            shutil.copy(os.path.join(SHARED, name, "tokenizer_config.json"), d)
            with lzma.open(os.path.join(SHARED, name, "tokenizer.json.xz")) as f, open(os.path.join(d, "tokenizer.json"), "wb") as g:
                g.write(f.read())
            tok = AutoTokenizer.from_pretrained(d)
            if tok.chat_template is None:
                continue  # mistral: no template (the built-in format is tested in C++ alone)
            for msgs, agp, extra in conversation_cases(name):
                rows.append({"tokenizer": name, "messages": msgs, "add_generation_prompt": agp, "extra": extra,
                             **render_with(tok, msgs, agp, extra)})
            if name == "mistral":
                continue
        # synthetic templates: with the llama3_1 tokenizer's special tokens (bos/eos)
        base = AutoTokenizer.from_pretrained(os.path.join(tmp, "llama3_1"))
        for name, src in SYNTHETIC.items():
            base.chat_template = src
            for msgs, agp, extra in conversation_cases(name):
                rows.append({"template": name, "messages": msgs, "add_generation_prompt": agp, "extra": extra,
                             **render_with(base, msgs, agp, extra)})
    finally:
        shutil.rmtree(tmp)
    os.makedirs(os.path.join(OUT, "templates"), exist_ok=True)
    for name, src in SYNTHETIC.items():
        with open(os.path.join(OUT, "templates", name + ".jinja"), "w") as f:
            f.write(src)
    with open(os.path.join(OUT, "conversations.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"conversations.jsonl: {len(rows)} cases", file=sys.stderr)


# ---------------------------------------------------------------- feature table
CTX = {"d": {"a": 1, "b": [1, 2], "items": 5}, "l": [3, 1, 2], "s": "Hello World", "n": None, "t": True,
       "f": 2.5, "i": 7, "e": "", "el": [], "u8": "héllo wörld 漢字",
       "users": [{"name": "Ann", "age": 30, "admin": True}, {"name": "bob", "age": 25, "admin": False},
                 {"name": "Cy", "age": 35}]}

FEATURES = r"""
{{ s }}|{{ i }}|{{ f }}|{{ n }}|{{ t }}|{{ l }}|{{ d }}|{{ nothing }}|
{{ 1 + 2 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1.5 * 2 }} {{ 'ab' * 3 }} {{ [1] * 2 }}
{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e-5 }} {{ 100.0 }} {{ 1/3 }} {{ 2.5e-3 }} {{ 1_000 }} {{ 0x1f }} {{ -f }} {{ +i }}
{{ 1 ~ 2 ~ 'x' ~ n ~ t }} {{ 'a' 'b' }} {{ "q\"uote" }} {{ 'tab\tnew\nline' }} {{ '\u00e9\x41' }}
{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 1 == 1.0 }} {{ t == 1 }} {{ 'a' != 'b' }} {{ l == [3, 1, 2] }} {{ 'b' > 'a' }} {{ 2 >= 2 }}
{{ 'ell' in s }} {{ 4 in l }} {{ 'a' in d }} {{ 'z' not in d }} {{ not e }} {{ n is none }} {{ nothing is defined }} {{ nothing is undefined }}
{{ e or 'fallback' }} {{ s and i }} {{ e and i }} {{ n or e or 0 }}
{{ 'yes' if t else 'no' }} {{ 'yes' if e else 'no' }} [{{ 'x' if e }}] {{ (1 if t) is defined }}
{{ s[0] }} {{ s[-1] }} {{ s[1:4] }} {{ s[::-1] }} {{ s[::2] }} {{ l[-2:] }} {{ l[:-1] }} {{ l[10] is defined }} {{ u8[1] }} {{ u8[-2:] }} {{ u8|length }}
{{ d.a }} {{ d['b'][1] }} {{ d.b.0 }} {{ d.items is defined }} {{ d['items'] }} {{ d.get('a') }} {{ d.get('zz', 'dflt') }} {{ d.missing is defined }} {{ n.attr is defined }}
{{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }} {% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}
{% for k in d %}{{ k }},{% endfor %} {% for c in 'abc' %}{{ c }}.{% endfor %} {% for x in nothing %}never{% else %}empty{% endfor %}
{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}
{% for x in l %}{{ loop.previtem is defined }}{{ loop.previtem }}-{{ loop.nextitem }} {{ loop.cycle('odd', 'even') }};{% endfor %}
{% for x in l if x > 1 %}{{ x }}:{{ loop.index }}/{{ loop.length }} {% endfor %}
{% for x in l %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}
{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}{{ loop.index }} {% endfor %}
{% set x = 1 %}{% for i in range(3) %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}
{% set ns = namespace(total=0, names=[]) %}{% for u in users %}{% set ns.total = ns.total + u.age %}{% set ns.names = ns.names + [u.name] %}{% endfor %}{{ ns.total }} {{ ns.names }} {{ ns }}
{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set tup = (1,) %}{{ tup }} {{ (1, 2) }} {{ () }}
{% set block %}  inner {{ i }}  {% endset %}[{{ block }}] {% set up | upper %}shout{% endset %}{{ up }}
{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', greeting='Hi') }} {{ greet('Cy', 'Yo') }}
{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k=4) }}
{% macro wrap() %}<{{ caller() }}>{% endmacro %}{% call wrap() %}body {{ i }}{% endcall %}
{% filter upper %}filtered {{ s }}{% endfilter %}
{% with y = 5, z = i %}{{ y + z }}{% endwith %}{{ y is defined }}
{{ '  pad  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ s|upper }}|{{ s|lower }}|{{ 'hello world-foo (bar'|title }}|{{ 'hELLO'|capitalize }}|{{ s|length }}|{{ l|count }}
{{ s|replace('l', 'L') }} {{ s|replace('l', 'L', 1) }} {{ l|join(', ') }} {{ l|join }} {{ users|join(',', attribute='name') }}
{{ l|first }} {{ l|last }} {{ l|sort }} {{ l|sort(reverse=true) }} {{ l|max }} {{ l|min }} {{ l|sum }} {{ l|reverse|list }} {{ s|reverse }} {{ [1, 1, 2, 1]|unique|list }}
{{ n|default('d') }} {{ nothing|default('d') }} {{ e|default('d', true) }} {{ nothing|d('dd') }} {{ l|list }} {{ 'ab'|list }} {{ 12|string }} {{ t|string }}
{{ '42'|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ '2.5'|float }} {{ 3|float }} {{ -3|abs }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.1|round(0, 'ceil') }} {{ 3|round }}
{{ d|items|list }} {{ {'b': 2, 'a': 1, 'C': 3}|dictsort }} {{ {'b': 2, 'a': 1}|dictsort(by='value', reverse=true) }}
{{ users|selectattr('admin')|map(attribute='name')|list }} {{ users|rejectattr('admin')|map(attribute='name')|join('+') }} {{ users|selectattr('age', 'gt', 26)|list|length }}
{{ users|map(attribute='name')|map('upper')|list }} {{ l|select('odd')|list }} {{ l|reject('odd')|list }} {{ users|sort(attribute='age')|map(attribute='name')|list }} {{ users|map(attribute='admin', default=false)|list }}
{{ users|selectattr('name', 'equalto', 'bob')|first }} {{ users|max(attribute='age') }}
{{ d|tojson }} {{ users|tojson }} {{ u8|tojson }} {{ {'k': [1, {'z': none}], 'f': 1.0, 'q': 'a"b\\c'}|tojson(indent=2) }} {{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} {{ u8|tojson(ensure_ascii=true) }} {{ []|tojson(indent=2) }}
{{ 'line1\nline2\n\nline4'|indent }}|{{ 'a\nb'|indent(2, true) }}|{{ 'a\n\nb'|indent(width='> ', blank=true) }}
{{ '<a href="x">&</a>'|e }} {{ '<b>'|safe }} {{ 'one two  three'|wordcount }} {{ 'abc'|center(9) }}|{{ 'hello world foo'|truncate(9) }}|{{ l|batch(2)|list }}
{{ s.upper() }} {{ s.lower() }} {{ s.split() }} {{ s.split('o') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a b c'.rsplit(' ', 1) }} {{ '  x '.strip() }} {{ 'xyx'.strip('x') }} {{ '\n\nx\n'.lstrip('\n') }} {{ 'x  '.rstrip() }}
{{ s.startswith('Hell') }} {{ s.endswith('World') }} {{ s.startswith(('x', 'H')) }} {{ s.replace('o', '0') }} {{ s.find('o') }} {{ s.find('z') }} {{ s.count('o') }} {{ '-'.join(['a', 'b']) }} {{ 'hello there'.title() }} {{ 'aBc'.capitalize() }}
{{ '{} and {}'.format('x', 1) }} {{ '{0}{name}'.format('a', name='b') }} {{ 'a\nb\r\nc'.splitlines() }} {{ '123'.isdigit() }} {{ 'abc'.isalpha() }} {{ s.index('W') }} {{ 'pre_x'.removeprefix('pre_') }}
{{ 7 is odd }} {{ 8 is even }} {{ 9 is divisibleby 3 }} {{ i is integer }} {{ f is float }} {{ t is boolean }} {{ i is number }} {{ s is string }} {{ d is mapping }} {{ l is iterable }} {{ l is sequence }} {{ s is sequence }} {{ i is sequence }} {{ t is true }} {{ n is false }}
{{ i is eq 7 }} {{ i is equalto 7 }} {{ i is ne 7 }} {{ 2 is in l }} {{ i is gt 3 }} {{ i is lt 3 }} {{ i is ge 7 }} {{ i is le 6 }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ greet is defined }} {{ range is callable }} {{ n is not none }}
{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1, b='x') }} {{ namespace(a=1).a }}
{{ [1, 'a', none, true, 2.0, [3], {'k': "it's"}] }} {{ ['say "hi"', "both ' \""] }} {{ {1: 'int key', none: 0} }}
{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }},{% endfor %} {% for x in l %}{% if x > 1 %}{% set inner = x %}{% endif %}{{ inner }}{% endfor %}[{{ inner }}]
{{ '\u3000 x\u00a0'|trim }}|{{ ' x '.strip() }}|{{ 'é'|upper }}|{{ 'ÀÉ'|lower }}|{{ 'ß'|length }}|{{ '漢字'|reverse }}|{{ u8|title }}|{{ u8.split('ö') }}
{{ 'a' * 0 }}|{{ -0.0 }}|{{ 1e300 * 1e300 }}|{{ 1.0e-4 }}|{{ 12345678901234567.0 }}|{{ 0.5|round }}|{{ 1.5|round }}|{{ 2.675|round(2) }}|{{ 10 / 4 }}|{{ 10 // 4.0 }}|{{ -7.5 % 2 }}|{{ 2 ** 0.5 }}|{{ 7 % -3 }}
{{ {'b': 2, 'A': 1}|dictsort(true) }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }} {{ ['B', 'b', 'a']|unique|list }} {{ [3, 'x']|length }}
{{ {'é': [1, 2.5, none], 'k': {'n': true}}|tojson(separators=(',', ':')) }} {{ 'a\u2028b\x7f'|tojson }} {{ [1, [2, [3, []]], {}]|tojson(indent=1) }} {{ {'x': 1}|tojson(indent='\t') }}
{{ none ~ 1 }}|{{ i|string + 'x' }}|{{ s.split()|map('length')|list }}|{{ users|map(attribute='name')|map('lower')|join }}|{{ l|map('string')|join('-') }}|{{ users|selectattr('admin', 'defined')|list|length }}|{{ users|selectattr('name', 'in', ['Ann', 'Cy'])|map(attribute='age')|sum }}
{% for x in range(6) %}{% if loop.index is divisibleby 2 %}{{ x }}{% endif %}{% endfor %} {{ '0x1A'|int(0, 16) }} {{ '12'|int(base=8) }} {{ true|int }} {{ none|default('x') }} {{ ''|default('x', boolean=true) }}
{% set ns = namespace(found=false, msgs=[]) %}{% macro note(m) %}{% set ns.found = true %}[{{ m }}]{% endmacro %}{{ note('a') }}{{ ns.found }}
{% set greeting = 'hi' %}{% macro use_outer() %}{{ greeting }}{% endmacro %}{{ use_outer() }}{% set greeting = 'changed' %}{{ use_outer() }}
{{ s[1:-1:2] }}|{{ s[100:] }}|{{ s[-100:2] }}|{{ l[::-2] }}|{{ l[5:1:-1] }}|{{ (1, 2, 3)[1:] }}|{{ u8[3:7] }}
{{ 'abc' ~ 1.0 ~ [1] ~ {'a': none} ~ (2,) }}|{{ "it's" ~ ["it's"] }}|{{ ['\n', '\\', '\x00', 'é', '\u200b'] }}
{{ messages is defined }}{{ 'x' is in 'xyz' }}{{ l is not sequence }}{{ s is iterable }}{{ n is mapping }}{{ 1.0 is integer }}{{ true is number }}{{ 3 is sameas 3 }}{{ none is sameas none }}
{% set t = 'a' %}{% with %}{% set t = 'b' %}{{ t }}{% endwith %}{{ t }} {% for i in l %}{% set t = i %}{% endfor %}{{ t }}
{{ '%s is %d years (%.2f) %5s|%-4s|%03d %x %%' % ('Ann', 30.7, 2.5, 'r', 'l', 7, 255) }} {{ '%s' % l }} {{ '%(a)s-%(b)s' % {'a': 1, 'b': none} }} {{ '%r %s' % ('q', true) }} {{ '%s, %s!'|format('Hello', 'World') }} {{ '%(x)s'|format(x=5) }} {{ '%.1s|%e|%g' % ('abc', 12345.678, 0.0001) }}
{% macro m1(a) %}{{ a }}{{ varargs }}{% endmacro %}{{ m1(1, 2, 3) }} {% macro m2(a) %}{{ kwargs }}{% endmacro %}{{ m2(1, z=2) }} {% macro m(a, b=a ~ '!') %}{{ b }}{% endmacro %}{{ m('x') }} {{ m(b='y', a='z') }}
{{ '%d items'|replace('%d', '3') }} {{ 'CamelCase'|lower|capitalize }} {{ 'x'|center(4) }}| {{ 'one two three four'|truncate(12, true) }} {{ 'one two three four'|truncate(12, false, '..', 0) }}
{% raw %}{{ not rendered }} {% if %}{% endraw %}
a {# comment #} b {#- trimmed -#} c
{%- if true %}  no-strip-before-dash  {% endif -%}
    after
  {% if true %}
    lstrip and trim
  {% endif %}
    {{ i }} variable keeps indent
  {%+ if true %}plus keeps{% endif +%}
next
{% if false %}x{% elif i > 5 %}elif{% else %}else{% endif %}
""".strip("\n")
# one template per line, except the whitespace block at the end, which is one multi-line template
FEATURES, _block = FEATURES.split("\n{% raw %}")
FEATURES = FEATURES.split("\n") + ["{% raw %}" + _block]

ERRORS = [
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}",
    "line1\n{% for x in l %}\n  {{ x + 'a' }}\n{% endfor %}",
    "{{ nothing.attr }}",
    "{{ nothing + 1 }}",
    "{{ 'a' + 1 }}",
    "{{ 1 / 0 }}",
    "{% if %}",
    "{% for x in l %}no end",
    "{{ x | nosuchfilter }}",
    "{{ x is nosuchtest }}",
    "{% endfor %}",
    "{{ 'unterminated }}",
    "{{ (1 }}",
    "{% set ns = namespace(a=1) %}{% set ns._private = 2 %}",
    "{% for x in n %}{% endfor %}",
    "ok\n  {{ 1 + }}",
    "{% break %}",
    "{{ '%d' % 'x' }}",
    "{{ '%s %s' % ('a',) }}",
    "{{ '%s' % ('a', 'b') }}",
    "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}",
    "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, b=2) }}",
    "{% macro m(a) %}{{ a }}{{ varargs }}{% endmacro %}{{ m(1, b=2) }}",
    "{{ l.append(4) }}",
    "{% if true %}{{ raise_exception('inside ' ~ i) }}{% endif %}",
]

WHITESPACE = [
    "  {% if true %}\n  x\n  {% endif %}\n  y",
    "a\n  {%- if true -%}  \n  b  \n  {%- endif -%}\n  c",
    "{% for i in [1,2] %}\n  - {{ i }}\n{% endfor %}\ndone\n",
    "{{ 1 }}  {% if true %}x{% endif %}",
    "line\n\t{% if true %}tab-indented{% endif %}\n",
    "{{- ' lead' }}   {{- 'x' -}}   {{ 'y' }}",
    "a  {#- c #}\nb {# c -#}   \n c\n  {# own line #}\nd",
    "{% raw -%}   raw {{ x }}   {%- endraw %}\nafter",
    "x\n\n",
    "x\n\n\n",
    "{% for m in l %}\n    {%- if m %}\n        [{{ m }}]\n    {%- endif %}\n{% endfor %}\n",
    "{%- for m in l -%}\n  {{ m }}\n{%- endfor -%}\n",
    "  {{- 'a' }}\n  {%- if true %} b {% endif -%}  \n  c {#- x #}  ",
    "\r\nwindows\r\nnewlines {% if true %}\r\nx{% endif %}\r\n",
    "text {%- if true %}\n\n  y{%- endif %}\n",
    "  {%- set x = 1 %}\n  {{ x }}",
    "{% if true %}\n{% endif %}\n\n",
]


def render_feature(src):
    try:
        return {"output": _compile_jinja_template(src).render(**CTX)}
    except Exception as e:
        return {"error": str(e), "kind": type(e).__name__}


def write_features():
    rows = []
    for src in FEATURES + WHITESPACE + ERRORS:
        rows.append({"template": src, "context": CTX, **render_feature(src)})
    with open(os.path.join(OUT, "features.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"features.jsonl: {len(rows)} cases", file=sys.stderr)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    write_features()
    write_conversations()
