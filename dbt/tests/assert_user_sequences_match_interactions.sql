-- fct_user_sequences.n_events must equal the number of ids in its item list and of the user's
-- rows in fct_interactions. Returns offenders.
with

sequences as (

    select * from {{ ref('fct_user_sequences') }}

),

interactions as (

    select
        user_key,
        count(*) as n_interactions

    from {{ ref('fct_interactions') }}
    group by user_key

)

select
    sequences.user_key,
    sequences.n_events,
    interactions.n_interactions

from sequences
left join interactions
    on sequences.user_key = interactions.user_key
where
    interactions.n_interactions is null
    or sequences.n_events != interactions.n_interactions
    or sequences.n_events
    != length(sequences.item_ids) - length(replace(sequences.item_ids, '{{ var("sequence_delimiter") }}', '')) + 1
