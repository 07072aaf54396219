import factory

from config.models import Project
from networking.models import Network


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"project-{n}")


class NetworkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Network

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"net-{n}")
