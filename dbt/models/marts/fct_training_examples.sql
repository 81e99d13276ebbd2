{%- set validation_start = var('time_split_validation_start', none) -%}
{%- set test_start = var('time_split_test_start', none) -%}

with

interactions as (

    select * from {{ ref('fct_interactions') }}

),

positioned as (

    select
        *,
        row_number() over (
            partition by source, user_id
            order by event_ts, sequence_number, {{ binary_collate('interaction_id') }}
        ) as position,
        count(*) over (partition by source, user_id) as n_user_events

    from interactions

),

-- Global time split per source: events after the 80th percentile event time are validation,
-- after the 90th test (80/10/10 when times are distinct), unless fixed start dates are given
-- (vars time_split_validation_start / time_split_test_start, inclusive).
percentiles as (

    select
        source,
        {{ percentile_disc('event_ts', 0.8) }} as p80_event_ts,
        {{ percentile_disc('event_ts', 0.9) }} as p90_event_ts

    from interactions
    group by source

),

cutoffs as (

    select
        interactions.source,
        {% if validation_start -%}
        cast('{{ validation_start }}' as timestamp)
        {%- else -%}
        min(case when interactions.event_ts > percentiles.p80_event_ts then interactions.event_ts end)
        {%- endif %} as validation_start,
        {% if test_start -%}
        cast('{{ test_start }}' as timestamp)
        {%- else -%}
        min(case when interactions.event_ts > percentiles.p90_event_ts then interactions.event_ts end)
        {%- endif %} as test_start

    from interactions
    inner join percentiles
        on interactions.source = percentiles.source
    group by interactions.source

),

split as (

    select
        positioned.*,
        -- Leave-one-out, the protocol of the published Beauty tables: last event test, the one
        -- before validation; histories shorter than 3 only train.
        case
            when positioned.n_user_events < 3 then 'train'
            when positioned.position = positioned.n_user_events then 'test'
            when positioned.position = positioned.n_user_events - 1 then 'validation'
            else 'train'
        end as loo_split,
        case
            when positioned.event_ts >= cutoffs.test_start then 'test'
            when positioned.event_ts >= cutoffs.validation_start then 'validation'
            else 'train'
        end as time_split,
        cutoffs.validation_start as time_split_validation_start,
        cutoffs.test_start as time_split_test_start

    from positioned
    inner join cutoffs
        on positioned.source = cutoffs.source

),

final as (

    select
        interaction_id,
        source,
        user_id,
        item_id,
        user_key,
        item_key,
        event_ts,
        event_type,
        rating,
        quantity,
        sequence_number,
        position,
        n_user_events,
        loo_split,
        time_split,
        time_split_validation_start,
        time_split_test_start

    from split

)

select * from final
