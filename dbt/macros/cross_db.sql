{#-
    Everything that is spelled differently on DuckDB and PostgreSQL goes through adapter.dispatch,
    so models stay engine-neutral. default__ is the SQL-standard/PostgreSQL spelling; duckdb__
    overrides it where DuckDB has its own (faster or only) form.
-#}

{#- True when `string` matches the POSIX regular expression `pattern` (a SQL string literal). -#}
{% macro regexp_matches(string, pattern) -%}
    {{ return(adapter.dispatch('regexp_matches', 'shopflow')(string, pattern)) }}
{%- endmacro %}

{% macro default__regexp_matches(string, pattern) -%}
    ({{ string }} ~ {{ pattern }})
{%- endmacro %}

{% macro duckdb__regexp_matches(string, pattern) -%}
    regexp_matches({{ string }}, {{ pattern }})
{%- endmacro %}


{#- The last `delimiter`-separated part of `string` ('a > b > c' -> 'c'). -#}
{% macro split_part_last(string, delimiter) -%}
    {{ return(adapter.dispatch('split_part_last', 'shopflow')(string, delimiter)) }}
{%- endmacro %}

{#- split_part with a negative index needs PostgreSQL 14; reversing works on every version. -#}
{% macro default__split_part_last(string, delimiter) -%}
    reverse(split_part(reverse({{ string }}), reverse({{ delimiter }}), 1))
{%- endmacro %}

{% macro duckdb__split_part_last(string, delimiter) -%}
    split_part({{ string }}, {{ delimiter }}, -1)
{%- endmacro %}


{#- Median (interpolated) of a numeric expression, as an aggregate. -#}
{% macro median(expression) -%}
    {{ return(adapter.dispatch('median', 'shopflow')(expression)) }}
{%- endmacro %}

{% macro default__median(expression) -%}
    percentile_cont(0.5) within group (order by {{ expression }})
{%- endmacro %}

{% macro duckdb__median(expression) -%}
    median({{ expression }})
{%- endmacro %}


{#- Discrete percentile (an actual value of the column, so it works on timestamps), as an aggregate. -#}
{% macro percentile_disc(expression, fraction) -%}
    {{ return(adapter.dispatch('percentile_disc', 'shopflow')(expression, fraction)) }}
{%- endmacro %}

{% macro default__percentile_disc(expression, fraction) -%}
    percentile_disc({{ fraction }}) within group (order by {{ expression }})
{%- endmacro %}

{% macro duckdb__percentile_disc(expression, fraction) -%}
    quantile_disc({{ expression }}, {{ fraction }})
{%- endmacro %}


{#- Concatenate `expression` over a group in the given order (an ORDER BY list, as SQL text). -#}
{% macro ordered_string_agg(expression, delimiter, order_by) -%}
    {{ return(adapter.dispatch('ordered_string_agg', 'shopflow')(expression, delimiter, order_by)) }}
{%- endmacro %}

{#- PostgreSQL's string_agg takes text only. -#}
{% macro default__ordered_string_agg(expression, delimiter, order_by) -%}
    string_agg(cast({{ expression }} as {{ dbt.type_string() }}), {{ delimiter }} order by {{ order_by }})
{%- endmacro %}

{% macro duckdb__ordered_string_agg(expression, delimiter, order_by) -%}
    string_agg({{ expression }}, {{ delimiter }} order by {{ order_by }})
{%- endmacro %}


{#-
    A string expression compared byte-wise. PostgreSQL compares text by the database's locale,
    DuckDB byte-wise; pinning "C" keeps item_a < item_b, tie-breaks and string_agg orders the same
    on both engines (and equal to Python's sort).
-#}
{% macro binary_collate(expression) -%}
    {{ return(adapter.dispatch('binary_collate', 'shopflow')(expression)) }}
{%- endmacro %}

{% macro default__binary_collate(expression) -%}
    {{ expression }}
{%- endmacro %}

{% macro postgres__binary_collate(expression) -%}
    ({{ expression }} collate "C")
{%- endmacro %}
