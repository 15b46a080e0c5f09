"""Knowledge-base articles and their embedded passages (app label: chatbot)."""

from django.db import models


class Article(models.Model):
    class Kind(models.TextChoices):
        ARTICLE = "article", "Knowledge-base article"

    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.ARTICLE)
    # Stable key for idempotent imports (the Markdown file name).
    slug = models.SlugField(max_length=200, unique=True)
    title = models.CharField(max_length=200)
    body = models.TextField(help_text="Markdown.")
    tags = models.CharField(max_length=300, blank=True, help_text="Comma-separated.")
    published = models.BooleanField(default=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Hash of the text the current passages were made from; differs while re-indexing is due.
    indexed_hash = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title

    @property
    def tag_list(self) -> list[str]:
        return [t.strip() for t in self.tags.split(",") if t.strip()]


class Passage(models.Model):
    """A chunk of an article; its id is its id in the faiss index."""

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="passages")
    position = models.PositiveIntegerField()
    text = models.TextField()
    # float32 little-endian, L2-normalised (so inner product = cosine similarity).
    embedding = models.BinaryField()

    class Meta:
        ordering = ["article_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["article", "position"], name="passage_position")
        ]

    def __str__(self) -> str:
        return f"{self.article.title} #{self.position}"
