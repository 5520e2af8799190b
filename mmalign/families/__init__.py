"""One :class:`mmalign.recipe.Family` per model family: what the recipe skeleton does differently for each."""
