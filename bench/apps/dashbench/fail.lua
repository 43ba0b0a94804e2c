return function(event)
  error("dashbench: this trigger always fails")
end
