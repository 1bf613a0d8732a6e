from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("tasks/", include("errands.django.urls")),
    path("", include("wordcount.urls")),
]
