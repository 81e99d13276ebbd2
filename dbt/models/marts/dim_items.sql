with

catalog_items as (

    select * from {{ ref('stg_shop__items') }}

),

catalog_interactions as (

    select * from {{ ref('stg_shop__interactions') }}

),

retail_items as (

    select * from {{ ref('int_retail_items_derived') }}

),

catalog_rows as (

    select
        source,
        item_id,
        title,
        brand,
        categories,
        category_top,
        category_leaf,
        description,
        price,
        true as is_in_catalog

    from catalog_items

),

-- Items users interacted with but whose catalog row is missing or quarantined: they still need
-- a row (and a text) so every interaction resolves to an item.
uncatalogued_rows as (

    select distinct
        catalog_interactions.source,
        catalog_interactions.item_id,
        cast(null as {{ dbt.type_string() }}) as title,
        cast(null as {{ dbt.type_string() }}) as brand,
        cast(null as {{ dbt.type_string() }}) as categories,
        cast(null as {{ dbt.type_string() }}) as category_top,
        cast(null as {{ dbt.type_string() }}) as category_leaf,
        cast(null as {{ dbt.type_string() }}) as description,
        cast(null as double precision) as price,
        false as is_in_catalog

    from catalog_interactions
    left join catalog_items
        on
            catalog_interactions.source = catalog_items.source
            and catalog_interactions.item_id = catalog_items.item_id
    where catalog_items.item_id is null

),

-- The retail export's description is a product name: it is the title.
retail_rows as (

    select
        source,
        stock_code as item_id,
        description as title,
        cast(null as {{ dbt.type_string() }}) as brand,
        cast(null as {{ dbt.type_string() }}) as categories,
        cast(null as {{ dbt.type_string() }}) as category_top,
        cast(null as {{ dbt.type_string() }}) as category_leaf,
        cast(null as {{ dbt.type_string() }}) as description,
        median_unit_price as price,
        true as is_in_catalog

    from retail_items

),

unioned as (

    select * from catalog_rows
    union all
    select * from uncatalogued_rows
    union all
    select * from retail_rows

),

bucketed as (

    select
        *,
        {{ price_bucket('price') }} as price_bucket

    from unioned

),

final as (

    select
        source || ':' || item_id as item_key,
        source,
        item_id,
        title,
        brand,
        categories,
        category_top,
        category_leaf,
        description,
        price,
        price_bucket,
        -- The text the encoder reads (ml.core.catalog.item_text builds the same). Never empty,
        -- never shared by two items: without a title an item is named by its id.
        concat_ws(
            ' | ',
            coalesce(title, 'item ' || item_id),
            'brand: ' || brand,
            'category: ' || categories,
            case when price is not null then 'price: ' || price_bucket end,
            left(description, 500)
        ) as item_text,
        is_in_catalog

    from bucketed

)

select * from final
