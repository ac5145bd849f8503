"""Chat templates (Jinja) of the tiny models, written for this project.

Each renders image parts as its architecture's placeholder and text parts as their text; a
message's content may be a string or a list of parts; ``add_generation_prompt`` opens the
assistant turn. The Gemma3 one has no system role: it raises ``System role not supported``,
as some real templates do, so that methods must detect it and fold instructions into the
user turn. Every tag trims the whitespace around it, so only quoted strings reach the prompt.
"""

_FOR_EACH_MESSAGE = r"""
{%- for message in messages -%}
  {%- if message['content'] is string -%}
    {%- set parts = [{'type': 'text', 'text': message['content']}] -%}
  {%- else -%}
    {%- set parts = message['content'] -%}
  {%- endif -%}
  {%- if message['role'] not in ['system', 'user', 'assistant'] -%}
    {{- raise_exception('Unknown role: ' + message['role']) -}}
  {%- endif -%}
"""

LLAVA_TEMPLATE = (
    "{{- bos_token -}}"
    + _FOR_EACH_MESSAGE
    + r"""
  {{- message['role'] | upper + ': ' -}}
  {%- for part in parts -%}
    {%- if part['type'] == 'image' -%}{{- '<image>\n' -}}
    {%- elif part['type'] == 'text' -%}{{- part['text'] -}}
    {%- endif -%}
  {%- endfor -%}
  {%- if message['role'] == 'assistant' -%}{{- eos_token -}}{%- endif -%}
  {{- '\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}
"""
)

IDEFICS3_TEMPLATE = (
    "{{- bos_token -}}"
    + _FOR_EACH_MESSAGE
    + r"""
  {{- '<|im_start|>' + message['role'] | capitalize + ':' -}}
  {%- for part in parts -%}
    {%- if part['type'] == 'image' -%}{{- '<image>' -}}
    {%- elif part['type'] == 'text' -%}{{- ' ' + part['text'] -}}
    {%- endif -%}
  {%- endfor -%}
  {{- '<end_of_utterance>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>Assistant:' -}}{%- endif -%}
"""
)

GEMMA3_TEMPLATE = (
    "{{- bos_token -}}"
    + _FOR_EACH_MESSAGE
    + r"""
  {%- if message['role'] == 'system' -%}
    {{- raise_exception('System role not supported') -}}
  {%- endif -%}
  {{- '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\n' -}}
  {%- for part in parts -%}
    {%- if part['type'] == 'image' -%}{{- '<start_of_image>' -}}
    {%- elif part['type'] == 'text' -%}{{- part['text'] -}}
    {%- endif -%}
  {%- endfor -%}
  {{- '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}
"""
)
