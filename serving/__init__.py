"""ShopFlow serving: the BentoML service (service.py), its logic (logic.py), build/smoke (smoke.py)."""
