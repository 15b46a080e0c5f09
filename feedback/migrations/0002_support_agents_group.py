from django.contrib.auth.management import create_permissions
from django.db import migrations


def group_create(apps, schema_editor):
    # Permissions are normally created after all migrations ran; create ours now.
    app_config = apps.get_app_config("feedback")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Support agents")
    group.permissions.add(
        Permission.objects.get(content_type__app_label="feedback", codename="use_console")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("feedback", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(group_create, migrations.RunPython.noop)]
