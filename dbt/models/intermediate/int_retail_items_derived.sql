with

purchases as (

    select * from {{ ref('int_retail_purchases_filtered') }}

),

description_counts as (

    select
        source,
        stock_code,
        description,
        count(*) as n_lines

    from purchases
    where description is not null
    group by source, stock_code, description

),

-- The same stock code is typed with several descriptions over two years; the most frequent one
-- names it (ties: the alphabetically first, byte-wise so both engines agree).
description_ranked as (

    select
        *,
        row_number() over (
            partition by source, stock_code
            order by n_lines desc, {{ binary_collate('description') }}
        ) as description_rank

    from description_counts

),

item_stats as (

    select
        source,
        stock_code,
        {{ median('unit_price') }} as median_unit_price,
        count(*) as n_lines,
        count(distinct invoice) as n_invoices,
        cast(sum(quantity) as bigint) as total_quantity,
        min(invoice_ts) as first_sold_at,
        max(invoice_ts) as last_sold_at

    from purchases
    group by source, stock_code

),

final as (

    select
        item_stats.source || ':' || item_stats.stock_code as item_key,
        item_stats.source,
        item_stats.stock_code,
        description_ranked.description,
        item_stats.median_unit_price,
        item_stats.n_lines,
        item_stats.n_invoices,
        item_stats.total_quantity,
        item_stats.first_sold_at,
        item_stats.last_sold_at

    from item_stats
    left join description_ranked
        on
            item_stats.source = description_ranked.source
            and item_stats.stock_code = description_ranked.stock_code
            and description_ranked.description_rank = 1

)

select * from final
