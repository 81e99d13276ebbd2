-- A raw row that validation quarantined must never reach staging. Returns the leaks.
with

quarantined as (

    select distinct _row_id from {{ source('quarantine', 'rows') }}

),

staged as (

    select _row_id from {{ ref('stg_shop__interactions') }}
    union all
    select _row_id from {{ ref('stg_shop__items') }}
    union all
    select _row_id from {{ ref('stg_retail__invoice_lines') }}

)

select staged._row_id
from staged
inner join quarantined
    on staged._row_id = quarantined._row_id
