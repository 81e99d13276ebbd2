with

baskets as (

    select * from {{ ref('fct_baskets') }}

),

purchases as (

    select * from {{ ref('int_retail_purchases_filtered') }}

),

-- Pairs grow with the square of basket size: wholesale orders of hundreds of items would
-- dominate the cost and say little about what goes together.
eligible_baskets as (

    select
        source,
        invoice

    from baskets
    where n_distinct_items <= {{ var('max_basket_lines') }}

),

basket_items as (

    select distinct
        purchases.source,
        purchases.invoice,
        purchases.stock_code as item_id

    from purchases
    inner join eligible_baskets
        on
            purchases.source = eligible_baskets.source
            and purchases.invoice = eligible_baskets.invoice

),

basket_totals as (

    select
        source,
        count(distinct invoice) as n_baskets_total

    from basket_items
    group by source

),

item_baskets as (

    select
        source,
        item_id,
        count(*) as n_baskets_item

    from basket_items
    group by source, item_id

),

pairs as (

    select
        item_a.source,
        item_a.item_id as item_a,
        item_b.item_id as item_b,
        count(*) as n_baskets

    from basket_items as item_a
    inner join basket_items as item_b
        on
            item_a.source = item_b.source
            and item_a.invoice = item_b.invoice
            and {{ binary_collate('item_a.item_id') }} < {{ binary_collate('item_b.item_id') }}
    group by item_a.source, item_a.item_id, item_b.item_id
    having count(*) >= {{ var('min_pair_baskets') }}

),

final as (

    select
        pairs.source || ':' || pairs.item_a || ':' || pairs.item_b as pair_id,
        pairs.source,
        pairs.item_a,
        pairs.item_b,
        pairs.source || ':' || pairs.item_a as item_key_a,
        pairs.source || ':' || pairs.item_b as item_key_b,
        pairs.n_baskets,
        cast(pairs.n_baskets as double precision) / basket_totals.n_baskets_total as support,
        cast(pairs.n_baskets as double precision) / baskets_a.n_baskets_item as confidence_a_to_b,
        cast(pairs.n_baskets as double precision) / baskets_b.n_baskets_item as confidence_b_to_a,
        cast(pairs.n_baskets as double precision) * basket_totals.n_baskets_total
        / (cast(baskets_a.n_baskets_item as double precision) * baskets_b.n_baskets_item) as lift

    from pairs
    inner join basket_totals
        on pairs.source = basket_totals.source
    inner join item_baskets as baskets_a
        on
            pairs.source = baskets_a.source
            and pairs.item_a = baskets_a.item_id
    inner join item_baskets as baskets_b
        on
            pairs.source = baskets_b.source
            and pairs.item_b = baskets_b.item_id

)

select * from final
