-- A table, unlike the other intermediate models: four marts and their tests read it, and as a
-- view the duplicate-removing window over a million lines would run again for each of them.
{{ config(materialized='table') }}

with

invoice_lines as (

    select * from {{ ref('stg_retail__invoice_lines') }}

),

purchases as (

    select *
    from invoice_lines
    where
        not is_cancellation
        and is_product
        and quantity > 0
        and unit_price > 0

),

-- Online Retail II repeats ~11.8k lines verbatim (same invoice, item, quantity, price, time):
-- an export artefact, counted once.
deduplicated as (

    select
        *,
        row_number() over (
            partition by
                source, invoice, stock_code, description, quantity, invoice_ts, unit_price, customer_id
            order by {{ binary_collate('_row_id') }}
        ) as copy_number

    from purchases

),

final as (

    select
        _row_id,
        source,
        invoice,
        stock_code,
        description,
        quantity,
        invoice_ts,
        unit_price,
        line_amount,
        customer_id,
        country

    from deduplicated
    where copy_number = 1

)

select * from final
