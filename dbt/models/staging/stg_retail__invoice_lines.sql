with

invoice_lines as (

    select * from {{ source('raw', 'invoice_lines') }}

),

quarantined as (

    select distinct _row_id from {{ source('quarantine', 'rows') }}

),

accepted as (

    select invoice_lines.*
    from invoice_lines
    left join quarantined
        on invoice_lines._row_id = quarantined._row_id
    where quarantined._row_id is null

),

renamed as (

    select
        _row_id,
        source,
        upper(trim(invoice)) as invoice,
        -- '85123a' and '85123A' are the same product typed twice.
        upper(trim(stock_code)) as stock_code,
        -- Descriptions come padded and with doubled spaces ('MISO PRETTY  GUM').
        nullif(regexp_replace(trim(description), '\s+', ' ', 'g'), '') as description,
        cast(quantity as bigint) as quantity,
        invoice_ts,
        cast(price as double precision) as unit_price,
        nullif(trim(customer_id), '') as customer_id,
        nullif(trim(country), '') as country,
        _partition,
        _loaded_at

    from accepted

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
        quantity * unit_price as line_amount,
        customer_id,
        country,
        invoice like 'C%' as is_cancellation,
        {{ regexp_matches('stock_code', "'" ~ var('retail_product_code_pattern') ~ "'") }} as is_product,
        _partition,
        _loaded_at

    from renamed

)

select * from final
