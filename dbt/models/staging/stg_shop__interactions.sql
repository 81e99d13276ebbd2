with

interactions as (

    select * from {{ source('raw', 'interactions') }}

),

quarantined as (

    select distinct _row_id from {{ source('quarantine', 'rows') }}

),

accepted as (

    select interactions.*
    from interactions
    left join quarantined
        on interactions._row_id = quarantined._row_id
    where quarantined._row_id is null

),

renamed as (

    select
        {{ surrogate_key(['source', 'user_id', 'item_id', 'event_ts', 'sequence_number']) }} as interaction_id,
        source,
        user_id,
        trim(item_id) as item_id,
        event_ts,
        coalesce(nullif(lower(trim(event_type)), ''), 'interaction') as event_type,
        cast(rating as double precision) as rating,
        nullif(trim(review_text), '') as review_text,
        cast(sequence_number as bigint) as sequence_number,
        _row_id,
        _partition,
        _loaded_at

    from accepted

),

-- The same event landed twice (a re-exported file): keep the most recently loaded copy.
deduplicated as (

    select
        *,
        row_number() over (
            partition by interaction_id
            order by _loaded_at desc, {{ binary_collate('_row_id') }}
        ) as copy_number

    from renamed

),

final as (

    select
        interaction_id,
        source,
        user_id,
        item_id,
        event_ts,
        event_type,
        rating,
        review_text,
        sequence_number,
        _row_id,
        _partition,
        _loaded_at

    from deduplicated
    where copy_number = 1

)

select * from final
