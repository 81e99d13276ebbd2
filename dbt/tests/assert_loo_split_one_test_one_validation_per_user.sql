-- Leave-one-out must give every user with 3+ events exactly one test and one validation
-- example, the test one being the latest; users with fewer events none. Returns offenders.
with

examples as (

    select * from {{ ref('fct_training_examples') }}

),

per_user as (

    select
        source,
        user_id,
        count(*) as n_events,
        sum(case when loo_split = 'test' then 1 else 0 end) as n_test,
        sum(case when loo_split = 'validation' then 1 else 0 end) as n_validation,
        max(case when loo_split = 'test' then position end) as test_position

    from examples
    group by source, user_id

)

select *
from per_user
where
    (n_events >= 3 and (n_test != 1 or n_validation != 1 or test_position != n_events))
    or (n_events < 3 and (n_test != 0 or n_validation != 0))
