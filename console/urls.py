from django.urls import path
from django.views.generic import RedirectView

app_name = "console"
urlpatterns = [
    path("", RedirectView.as_view(pattern_name="api-docs"), name="home"),
]
