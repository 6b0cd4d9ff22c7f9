from django.urls import path

from . import views

urlpatterns = [
    path("health", views.health),
    path("items/<int:item_id>", views.get_item),
    path("orders", views.create_order),
    path("export", views.export),
]
