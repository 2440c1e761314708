# ExploraPlugin.cmake — explora_add_plugin(): build a plugin the way the loader expects.
#
#   explora_add_plugin(NAME lora KIND peft SOURCES lora.c [LIBS ...] [OUTPUT_DIR dir])
#
# makes a MODULE library named explora-<kind>-<name>.so, hidden visibility,
# linked against libexplora with -Wl,--no-undefined so that a symbol the plugin
# forgot to define fails at link time instead of at dlopen. Works in the
# explora tree (target explora_core) and out of tree after find_package(explora)
# (target explora::core).
function(explora_add_plugin)
  cmake_parse_arguments(P "" "NAME;KIND;OUTPUT_DIR" "SOURCES;LIBS" ${ARGN})
  if(NOT P_NAME OR NOT P_KIND OR NOT P_SOURCES)
    message(FATAL_ERROR "explora_add_plugin: NAME, KIND and SOURCES are required")
  endif()
  set(tgt explora-${P_KIND}-${P_NAME})
  add_library(${tgt} MODULE ${P_SOURCES})
  if(TARGET explora_core)
    target_link_libraries(${tgt} PRIVATE explora_core ${P_LIBS})
  else()
    target_link_libraries(${tgt} PRIVATE explora::core ${P_LIBS})
  endif()
  set_target_properties(${tgt} PROPERTIES
    PREFIX ""
    OUTPUT_NAME ${tgt}
    C_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  target_link_options(${tgt} PRIVATE "-Wl,--no-undefined")
  if(P_OUTPUT_DIR)
    set_target_properties(${tgt} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${P_OUTPUT_DIR})
  elseif(DEFINED EXPLORA_PLUGIN_BUILD_DIR)
    set_target_properties(${tgt} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${EXPLORA_PLUGIN_BUILD_DIR})
  endif()
endfunction()
