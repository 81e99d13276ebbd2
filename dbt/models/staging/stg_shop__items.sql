with

items as (

    select * from {{ source('raw', 'items') }}

),

quarantined as (

    select distinct _row_id from {{ source('quarantine', 'rows') }}

),

accepted as (

    select items.*
    from items
    left join quarantined
        on items._row_id = quarantined._row_id
    where quarantined._row_id is null

),

renamed as (

    select
        source,
        trim(item_id) as item_id,
        nullif(trim({{ html_unescape('title') }}), '') as title,
        nullif(trim({{ html_unescape('description') }}), '') as description,
        nullif(trim({{ html_unescape('brand') }}), '') as brand,
        nullif(trim(categories), '') as categories,
        -- A price of 0 or less is a missing price, not a free item.
        case when price > 0 then cast(price as double precision) end as price,
        _row_id,
        _partition,
        _loaded_at

    from accepted

),

-- The catalog lands again with later partitions: the newest row of an item wins.
latest as (

    select
        *,
        row_number() over (
            partition by source, item_id
            order by _partition desc, _loaded_at desc, {{ binary_collate('_row_id') }} desc
        ) as recency_rank

    from renamed

),

final as (

    select
        source || ':' || item_id as item_key,
        source,
        item_id,
        title,
        description,
        brand,
        categories,
        split_part(categories, ' > ', 1) as category_top,
        {{ split_part_last('categories', "' > '") }} as category_leaf,
        price,
        _row_id,
        _partition,
        _loaded_at

    from latest
    where recency_rank = 1

)

select * from final
