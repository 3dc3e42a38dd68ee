/* Placeholder so a layer with no sources yet still forms a library. */
typedef int cp__empty_translation_unit;
