with

purchases as (

    select * from {{ ref('int_retail_purchases_filtered') }}

),

final as (

    select
        source || ':' || invoice as basket_id,
        source,
        invoice,
        -- A handful of invoices carry two customer ids; take one, the same on both engines.
        min({{ binary_collate('customer_id') }}) as customer_id,
        source || ':' || min({{ binary_collate('customer_id') }}) as user_key,
        min(invoice_ts) as invoice_ts,
        count(*) as n_lines,
        count(distinct stock_code) as n_distinct_items,
        cast(sum(quantity) as bigint) as total_quantity,
        sum(line_amount) as basket_value

    from purchases
    group by source, invoice

)

select * from final
