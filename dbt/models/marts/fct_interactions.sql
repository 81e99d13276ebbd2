with

catalog_interactions as (

    select * from {{ ref('stg_shop__interactions') }}

),

retail_purchases as (

    select * from {{ ref('int_retail_purchases_filtered') }}

),

catalog_events as (

    select
        interaction_id,
        source,
        user_id,
        item_id,
        event_ts,
        event_type,
        rating,
        cast(null as bigint) as quantity,
        -- A source without positions still needs a deterministic tie-break for equal timestamps.
        coalesce(
            sequence_number,
            row_number() over (
                partition by source, user_id
                order by event_ts, {{ binary_collate('interaction_id') }}
            ) - 1
        ) as sequence_number

    from catalog_interactions

),

-- Guest checkouts have no user to recommend to: they stay in fct_baskets only.
-- An item bought on several lines of one invoice is one purchase of the summed quantity.
retail_items_bought as (

    select
        source,
        invoice,
        customer_id as user_id,
        stock_code as item_id,
        min(invoice_ts) as event_ts,
        -- sum(bigint) is numeric on PostgreSQL and hugeint on DuckDB: bigint on both.
        cast(sum(quantity) as bigint) as quantity

    from retail_purchases
    where customer_id is not null
    group by source, invoice, customer_id, stock_code

),

retail_events as (

    select
        {{ surrogate_key(['source', 'invoice', 'user_id', 'item_id']) }} as interaction_id,
        source,
        user_id,
        item_id,
        event_ts,
        'purchase' as event_type,
        cast(null as double precision) as rating,
        quantity,
        -- The export has no position: order a customer's purchases by time, then invoice, then item.
        row_number() over (
            partition by source, user_id
            order by event_ts, {{ binary_collate('invoice') }}, {{ binary_collate('item_id') }}
        ) - 1 as sequence_number

    from retail_items_bought

),

unioned as (

    select * from catalog_events
    union all
    select * from retail_events

),

final as (

    select
        interaction_id,
        source,
        user_id,
        item_id,
        source || ':' || user_id as user_key,
        source || ':' || item_id as item_key,
        event_ts,
        event_type,
        rating,
        quantity,
        sequence_number

    from unioned

)

select * from final
