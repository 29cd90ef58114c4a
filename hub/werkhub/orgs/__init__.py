"""Organisations: several companies (or plants, departments) on one werkhub.

``rules`` (pure: slugs, the hub groups that mirror an organisation, who may see and manage
what, which groups a share may name), ``tables`` and ``store`` (organisations, their
members and admins, the groups created inside each). The werkhub service's API is
``werkhub.service.orgs``; it keeps the hub's groups equal to the store's memberships.
"""
