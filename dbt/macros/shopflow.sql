{#-
    A deterministic key from several columns (md5 of the '|'-joined values, NULL spelled out),
    the same on both engines: md5 and the text form of timestamps/integers agree.
-#}
{% macro surrogate_key(columns) -%}
    md5(
        {%- for column in columns %}
        coalesce(cast({{ column }} as {{ dbt.type_string() }}), '<null>'){% if not loop.last %} || '|' ||{% endif %}
        {%- endfor %}
    )
{%- endmacro %}


{#-
    Fixed price bands (var price_bands: ascending upper bounds) rather than quantiles: a band
    must not move when new data arrives, because item_text (and so cached item embeddings)
    is built from it. Labels carry no currency: sources price in USD or GBP.
-#}
{% macro price_bucket(price) -%}
    {%- set bands = var('price_bands') -%}
    case
        when {{ price }} is null then 'unknown'
        {%- for upper in bands %}
        when {{ price }} < {{ upper }} then '{{ "under " ~ upper if loop.first else bands[loop.index0 - 1] ~ "-" ~ upper }}'
        {%- endfor %}
        else '{{ bands[-1] }}+'
    end
{%- endmacro %}


{#-
    Decode the HTML entities the Amazon export left in titles and brands ('L&#39;Oreal',
    'Bath &amp; Body') so the text encoder reads words, not markup. A fixed list covering the
    shipped data; '&amp;' last so '&amp;quot;' stays '&quot;' as written.
-#}
{% macro html_unescape(expression) -%}
    {%- set entities = [
        ('&quot;', '"'), ('&#39;', "''"), ('&reg;', '®'), ('&trade;', '™'), ('&copy;', '©'),
        ('&nbsp;', ' '), ('&eacute;', 'é'), ('&egrave;', 'è'), ('&ccedil;', 'ç'), ('&deg;', '°'),
        ('&frac12;', '½'), ('&lt;', '<'), ('&gt;', '>'), ('&amp;', '&'),
    ] -%}
    {%- set decoded = namespace(sql=expression) -%}
    {%- for entity, character in entities -%}
        {%- set decoded.sql = "replace(" ~ decoded.sql ~ ", '" ~ entity ~ "', '" ~ character ~ "')" -%}
    {%- endfor -%}
    {{ decoded.sql }}
{%- endmacro %}
