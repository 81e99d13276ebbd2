{#-
    A user's trailing 30 days, in whole seconds: an event e counts for an event at t when
    t - 30 days < e <= t. RANGE over integer seconds makes the lower bound exclusive (a RANGE
    over timestamps with interval '30 days' would include an event exactly 30 days back), and
    CURRENT ROW takes every event of the same second (peers), this one included.
-#}
{%- set trailing_seconds = 30 * 86400 - 1 -%}

with

interactions as (

    select * from {{ ref('fct_interactions') }}

),

items as (

    select * from {{ ref('dim_items') }}

),

-- Seconds since the epoch, truncated: the monitoring code compared event times per second.
interactions_timed as (

    select
        *,
        cast(extract(epoch from date_trunc('second', event_ts)) as bigint) as event_epoch_s

    from interactions

),

-- First-seen times and activity over the whole warehouse (not a monitored window), so ages,
-- tenures and activity mean the same whatever interval a monitoring run reads.
interactions_histories as (

    select
        *,
        min(event_ts) over (partition by source, item_id) as item_first_ts,
        min(event_ts) over (partition by source, user_id) as user_first_ts,
        count(*) over (
            partition by source, user_id
            order by event_epoch_s
            range between {{ trailing_seconds }} preceding and current row
        ) as user_events_30d

    from interactions_timed

),

final as (

    select
        interactions_histories.source,
        interactions_histories.interaction_id,
        interactions_histories.user_id,
        interactions_histories.item_id,
        interactions_histories.event_ts,
        interactions_histories.rating,
        interactions_histories.quantity,
        interactions_histories.sequence_number,
        coalesce(items.category_leaf, items.category_top) as category,
        items.brand,
        items.price,
        items.title,
        interactions_histories.item_first_ts,
        interactions_histories.user_first_ts,
        interactions_histories.user_events_30d

    from interactions_histories
    left join items
        on
            interactions_histories.source = items.source
            and interactions_histories.item_id = items.item_id

)

select * from final
