from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import path

from console.views import account, alerts, auth, data, fleet, releases, tasks

app_name = "console"

A = "apps/<slug:slug>/"

urlpatterns = [
    path("", auth.home, name="home"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("tokens/", auth.tokens, name="tokens"),
    path("new-app/", account.app_create, name="app-new"),
    path(A, account.overview, name="overview"),
    path(A + "audit/", account.audit_log, name="audit"),
    path(A + "settings/", account.settings_page, name="settings"),
    path(A + "settings/keys/<int:key_id>/revoke/", account.revoke_key, name="revoke-key"),
    path(A + "tasks/", tasks.task_list, name="tasks"),
    path(A + "tasks/<int:task_id>/", tasks.task_detail, name="task"),
    path(A + "tasks/<int:task_id>/upload/", tasks.version_upload, name="version-upload"),
    path(A + "tasks/<int:task_id>/results/", data.results_page, name="task-results"),
    path(A + "tasks/<int:task_id>/health/", data.health_page, name="task-health"),
    path(A + "alerts/", alerts.alerts_page, name="alerts"),
    path(A + "fleet/", fleet.fleet, name="fleet"),
    path(A + "fleet/<str:uid>/", fleet.device_detail, name="device"),
    path(A + "groups/", fleet.group_list, name="groups"),
    path(A + "groups/new/", fleet.group_edit, name="group-new"),
    path(A + "groups/match/", fleet.group_match, name="group-match"),
    path(A + "groups/<int:group_id>/", fleet.group_edit, name="group-edit"),
    path(A + "releases/", releases.release_list, name="releases"),
    path(A + "releases/new/", releases.release_new, name="release-new"),
    path(A + "releases/<int:release_id>/", releases.release_dashboard, name="release"),
]

# The embedded default serves the console's CSS/JS itself when DEBUG is on (one laptop, no web
# server in front); with DEBUG off, run collectstatic and serve STATIC_ROOT from a web server/CDN.
urlpatterns += staticfiles_urlpatterns()
