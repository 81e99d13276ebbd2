{%- set event_order = 'event_ts, sequence_number, ' ~ binary_collate('interaction_id') -%}

with

interactions as (

    select * from {{ ref('fct_interactions') }}

),

final as (

    select
        source || ':' || user_id as user_key,
        source,
        user_id,
        {{ ordered_string_agg('item_id', "'" ~ var('sequence_delimiter') ~ "'", event_order) }} as item_ids,
        count(*) as n_events,
        count(distinct item_id) as n_distinct_items,
        min(event_ts) as first_event_ts,
        max(event_ts) as last_event_ts

    from interactions
    group by source, user_id

)

select * from final
